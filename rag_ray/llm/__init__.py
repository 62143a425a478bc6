"""LLM providers: ``create_llm(settings)`` builds the configured one from the registry."""

from __future__ import annotations

import importlib

from rag_ray.config import Settings
from rag_ray.llm.base import LLM, LLMS, ChatMessage, Completion, GenerationParams, StreamChunk, Usage

_PROVIDER_MODULES = ("fake", "local", "openai", "anthropic", "google", "ollama")


def load_providers() -> None:
    for name in _PROVIDER_MODULES:
        try:
            importlib.import_module(f"rag_ray.llm.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rag_ray.llm.{name}":
                raise


def create_llm(settings: Settings, provider: str | None = None, model: str | None = None) -> LLM:
    load_providers()
    provider = (provider or settings.llm_provider).lower()
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return LLMS.create(provider, model or settings.llm_model, api_key=api_key, base_url=settings.llm_base_url)


__all__ = ["LLM", "LLMS", "ChatMessage", "Completion", "GenerationParams", "StreamChunk", "Usage", "create_llm",
           "load_providers"]
