"""The HTTP ingress: a Serve deployment whose ASGI app is ``rag_ray.api.create_app``."""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.embedder import HandleEmbedder
from deployments.llm import HandleLLM
from rag_ray.api.app import create_app
from rag_ray.api.services import Services
from rag_ray.config import Settings
from rag_ray.ingest.tracking import JobStore
from rag_ray.retrieval.service import RetrievalService
from rag_ray.runtime import Runtime


class RouterDeployment:
    """Builds the services in the replica (DB, Milvus, handles) and serves the FastAPI app."""

    def __init__(self, settings: Settings, embedder: serve.handle.DeploymentHandle,
                 llms: dict[str, serve.handle.DeploymentHandle]):
        self.settings = settings
        self.runtime = Runtime(settings)
        self.embedder_handle = embedder
        self.llm_handles = llms

    async def _services(self) -> Services:
        info = await self.embedder_handle.info.remote()
        embedder = HandleEmbedder(self.embedder_handle, info)
        llms = {name: HandleLLM(h, await h.info.remote()) for name, h in self.llm_handles.items()}
        default_llm = next(iter(llms.values()))
        store = self.runtime.store
        features: dict[str, Any] = {"metadata_db": self.runtime.db, "store": store, "llms": llms,
                                    "runtime": self.runtime}
        return Services(settings=self.settings, auth=_build_auth(self.runtime), embedder=embedder, llm=default_llm,
                        retrieval=RetrievalService(store, embedder, max_k=self.settings.max_k),
                        jobs=JobStore(self.runtime.db), features=features)

    async def __serve_build_asgi_app__(self) -> Any:
        return create_app(await self._services())


def _build_auth(runtime: Runtime) -> Any:
    from rag_ray.access.service import AuthService

    return AuthService(runtime.db, runtime.settings)
