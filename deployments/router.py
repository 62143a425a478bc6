"""The HTTP ingress: a Serve deployment whose ASGI app is the composition root's app over Serve backends."""

from __future__ import annotations

from typing import Any

from deployments.backends import ServeBackends
from deployments.platform import RayPlatform
from rag_ray.config import Settings
from rag_ray.observability.logs import configure_logging
from rag_ray.server.compose import build_app


class RouterDeployment:
    def __init__(self, settings: Settings, embedder: Any, llms: dict[str, Any], evaluator: Any):
        configure_logging(settings)  # JSON lines with request ids, to stderr and the data dir's logs/app.log
        self.backends = ServeBackends(settings, RayPlatform(), embedder, llms, evaluator)
        self.settings = settings

    async def __serve_build_asgi_app__(self) -> Any:
        await self.backends.describe_llms()
        return await build_app(self.settings, self.backends)
