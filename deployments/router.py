"""The HTTP ingress: a Serve deployment whose ASGI app is ``rag_ray.api.create_app``."""

from __future__ import annotations

from typing import Any

from deployments.embedder import HandleEmbedder
from deployments.evaluator import evaluator_generation
from deployments.llm import HandleLLM
from jobs.ingest_files import run_submitted_job
from rag_ray.api.app import create_app
from rag_ray.api.services import Services
from rag_ray.config import Settings
from rag_ray.ingest.file_jobs import FileJobService
from rag_ray.ingest.tracking import JobStore
from rag_ray.providers.manager import LLMEntry, LLMManager
from rag_ray.providers.pricing import price_for
from rag_ray.providers.retry import RetryPolicy
from rag_ray.retrieval.search import fusion_from_settings, options_from_settings, reranker_from_settings
from rag_ray.retrieval.service import RetrievalService
from rag_ray.runtime import Runtime


def ray_task_launcher(fn: Any, *args: Any) -> None:
    """Run a job driver as a Ray task (it fans its own Ray Data work out across the cluster)."""
    import ray

    ray.remote(num_cpus=0, max_retries=0)(fn).remote(*args)


class RouterDeployment:
    """Builds the services in the replica (DB, Milvus, handles) and serves the FastAPI app."""

    def __init__(self, settings: Settings, embedder: Any, llms: dict[str, Any], evaluator: Any = None):
        self.settings = settings
        self.runtime = Runtime(settings)
        self.embedder_handle = embedder
        self.llm_handles = llms
        self.evaluator_handle = evaluator

    def _manager(self) -> LLMManager:
        from deployments.app import llm_specs

        specs, strategy = llm_specs(self.settings)
        entries = [LLMEntry.of(HandleLLM(self.llm_handles[s.id], s.provider, s.model), id=s.id, weight=s.weight,
                               priority=s.priority, max_context=s.max_context,
                               price=price_for(s.id, input_price=s.input_price, output_price=s.output_price))
                   for s in specs]
        return LLMManager(entries, strategy=strategy or "round_robin",
                          policy=RetryPolicy(max_retries=self.settings.llm_max_retries))

    async def _services(self) -> Services:
        from rag_ray.access.service import AuthService

        embedder = HandleEmbedder(self.embedder_handle, await self.embedder_handle.info.remote(),
                                  batched=self.settings.embed_batching)
        manager = self._manager()
        store = self.runtime.store
        features: dict[str, Any] = {"metadata_db": self.runtime.db, "store": store, "runtime": self.runtime,
                                    "llm_manager": manager, "embedder_handle": self.embedder_handle}
        features["file_jobs"] = FileJobService(self.settings, self.runtime.db, store, run_submitted_job,
                                               launcher=ray_task_launcher)
        if self.evaluator_handle is not None:  # answers are scored in the evaluator deployment
            features["generation"] = await evaluator_generation(manager, self.evaluator_handle)
        return Services(settings=self.settings, auth=AuthService(self.runtime.db, self.settings), embedder=embedder,
                        llm=manager, retrieval=self._retrieval(store, embedder),
                        jobs=JobStore(self.runtime.db), features=features)

    def _retrieval(self, store: Any, embedder: HandleEmbedder) -> RetrievalService:
        s = self.settings
        return RetrievalService(store, embedder, max_k=s.max_k, policy=s.governance_policy(),
                                fusion=fusion_from_settings(s), reranker=reranker_from_settings(s),
                                options=options_from_settings(s))

    async def __serve_build_asgi_app__(self) -> Any:
        return create_app(await self._services())
