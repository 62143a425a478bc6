"""What the HTTP routes need, bundled. Built by the Serve app builder (or a test) and put on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from rag_ray.config import Settings
from rag_ray.ingest.tracking import JobStore
from rag_ray.providers.manager import LLMManager
from rag_ray.retrieval.service import AsyncEmbedder, RetrievalService
from rag_ray.types import Principal


class Authenticator(Protocol):
    def authenticate(self, token: str) -> Principal:
        """Validate a bearer token (JWT or API key) → the caller; raise AuthenticationError."""
        ...


@dataclass
class Services:
    settings: Settings
    auth: Authenticator
    retrieval: RetrievalService
    embedder: AsyncEmbedder
    llm: LLMManager  # every LLM call goes through the manager (strategies, retries, breakers, fallback)
    jobs: JobStore | None = None
    # optional feature services, set by the builder when configured (None → the routes answer 503)
    features: dict[str, Any] = field(default_factory=dict)

    def feature(self, name: str) -> Any:
        from rag_ray.errors import ConfigError

        try:
            return self.features[name]
        except KeyError:
            raise ConfigError(f"feature {name!r} is not configured on this server") from None
