"""Tenant guardrails: requests-per-period limits and LLM token/cost budgets per user, API key and group
(``rag_ray.guard.service.GuardService``, ``rag_ray.guard.metering.MeteredLLMManager``), and login protection
(``rag_ray.guard.lockout.LoginLockout``)."""
