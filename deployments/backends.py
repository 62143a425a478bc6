"""``Backends`` over Ray Serve: the collection embedder, each LLM and the evaluator are deployments (handles)."""

from __future__ import annotations

from typing import Any

from deployments.embedder import HandleEmbedder
from deployments.evaluator import evaluator_generation
from deployments.llm import HandleLLM, handle_llm
from rag_ray.config import Settings
from rag_ray.generation import GenerationService
from rag_ray.providers.config import ProviderSpec
from rag_ray.providers.manager import LLMManager
from rag_ray.server.platform import Platform


class ServeBackends:
    def __init__(self, settings: Settings, platform: Platform, embedder: Any, llms: dict[str, Any], evaluator: Any):
        self.settings = settings
        self.platform = platform
        self.embedder_handle, self.llm_handles, self.evaluator_handle = embedder, llms, evaluator
        self.llm_infos: dict[str, dict[str, Any]] = {}

    async def describe_llms(self) -> None:
        """Ask each LLM deployment what it offers besides generating (its window, its tokenizer), once at startup."""
        for spec_id, handle in self.llm_handles.items():
            self.llm_infos[spec_id] = await handle.info.remote()

    async def embedder(self) -> HandleEmbedder:
        info = await self.embedder_handle.info.remote()
        return HandleEmbedder(self.embedder_handle, info, batched=self.settings.embed_batching,
                              gather=self.settings.embed_router_batching)

    def llm(self, spec: ProviderSpec) -> HandleLLM:
        return handle_llm(self.llm_handles[spec.id], spec.provider, spec.model, self.llm_infos.get(spec.id))

    async def generation(self, llm: LLMManager) -> GenerationService:
        return await evaluator_generation(llm, self.evaluator_handle)
