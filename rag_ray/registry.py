"""A tiny name → factory registry, used for LLM providers, embedders, parsers and rerankers.

Ids look like ``provider:model`` (``openai:gpt-4o``); the part before the colon picks the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from rag_ray.errors import ConfigError

T = TypeVar("T")


def split_model_id(model_id: str, default_provider: str | None = None) -> tuple[str, str]:
    """``"openai:gpt-4o"`` → ``("openai", "gpt-4o")``; a bare model uses ``default_provider``."""
    provider, sep, model = model_id.partition(":")
    if sep:
        return provider.strip().lower(), model.strip()
    if default_provider is None:
        raise ConfigError(f"model id {model_id!r} has no provider prefix (expected 'provider:model')",
                          field="model")
    return default_provider, model_id.strip()


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r} (known: {known})", field="provider") from None

    def create(self, name: str, *args: object, **kwargs: object) -> T:
        return self.get(name)(*args, **kwargs)
