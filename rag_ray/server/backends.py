"""What the composition root is built over: the collection embedder, LLM engines, the answer evaluator, the platform.

``LocalBackends`` runs everything in this process (CLI, tests, ``RAG_PLATFORM=local``); test doubles are injected
here (``LocalBackends(settings, embedder=FakeEmbedder(), llms={"fake:echo": FakeLLM()})``).
``deployments.backends.ServeBackends`` is the same interface over Ray Serve deployment handles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from rag_ray.config import Settings
from rag_ray.embedding import Embedder, create_embedder
from rag_ray.embedding.backends import ThreadedBackend
from rag_ray.embedding.base import AsyncEmbedder
from rag_ray.generation import GenerationService, ProviderQualityTracker, ResponseEvaluator
from rag_ray.llm.base import LLM
from rag_ray.providers.config import ProviderSpec, create_llm_backend
from rag_ray.providers.manager import LLMManager
from rag_ray.server.platform import LocalPlatform, Platform


class Backends(Protocol):
    platform: Platform

    async def embedder(self) -> AsyncEmbedder:
        """The collection's embedder (what ingest wrote the vectors with)."""
        ...

    def llm(self, spec: ProviderSpec) -> LLM:
        """The engine behind one configured LLM provider."""
        ...

    async def generation(self, llm: LLMManager) -> GenerationService:
        """Scored single/ensemble generation over ``llm``."""
        ...


class LocalBackends:
    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, llms: Mapping[str, LLM] | None = None,
                 platform: Platform | None = None):
        self.settings = settings
        self._embedder = embedder
        self._llms = dict(llms or {})
        self.platform: Platform = platform or LocalPlatform(embedder)

    def sync_embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = create_embedder(self.settings)
        return self._embedder

    async def embedder(self) -> AsyncEmbedder:
        return ThreadedBackend(self.sync_embedder())

    def llm(self, spec: ProviderSpec) -> LLM:
        return self._llms[spec.id] if spec.id in self._llms else create_llm_backend(spec)

    async def generation(self, llm: LLMManager) -> GenerationService:
        evaluator = ResponseEvaluator(self.sync_embedder())
        return GenerationService(llm, evaluator, tracker=ProviderQualityTracker())
