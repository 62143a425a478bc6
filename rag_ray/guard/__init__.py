"""Tenant guardrails: requests-per-period limits and LLM token/cost budgets per user, API key and group
(``rag_ray.guard.service.GuardService``, ``rag_ray.guard.metering.MeteredLLMManager``). Login protection lives with the
accounts it protects (``rag_ray.access.lockout``)."""
