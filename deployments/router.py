"""The HTTP ingress: a Serve deployment whose ASGI app is the composition root's app over Serve backends."""

from __future__ import annotations

from typing import Any

from ray.serve._private.constants import RAY_SERVE_LOG_TO_STDERR
from ray.serve.context import _get_serve_request_context
from starlette.datastructures import Headers

from deployments.backends import ServeBackends
from deployments.drain import DrainRelay
from deployments.platform import RayPlatform
from rag_ray.config import Settings
from rag_ray.observability.context import REQUEST_ID_HEADER
from rag_ray.observability.logs import configure_logging
from rag_ray.server.compose import build_app


class RouterDeployment:
    def __init__(self, settings: Settings, embedder: Any, llms: dict[str, Any], evaluator: Any):
        # JSON lines with request ids to the data dir's logs/app.log, and to stderr unless Serve turns a replica's
        # stderr into records of its own log file (RAY_SERVE_LOG_TO_STDERR=0, the throughput-optimized default):
        # every line written twice, the copy costing a stack walk (py-spy: 4% of the router's samples under load)
        configure_logging(settings, to_stderr=RAY_SERVE_LOG_TO_STDERR)
        self.backends = ServeBackends(settings, RayPlatform(), embedder, llms, evaluator)
        self.settings = settings
        self.drain_relay: DrainRelay | None = None

    async def __serve_build_asgi_app__(self) -> Any:
        await self.backends.describe_llms()
        app = await build_app(self.settings, self.backends, proxy_request_id=serve_request_id)
        self.drain_relay = DrainRelay.follow(app.state.drain)  # new requests get 503 once the server stops
        return app

    def __del__(self) -> None:  # Serve stops this replica: the server's stop need not wait for it
        if self.drain_relay is not None:
            self.drain_relay.withdraw()
            self.drain_relay = None


def serve_request_id(headers: Headers) -> str | None:
    """The id Serve's proxy gave this request: it puts it in the request's ``x-request-id`` and the replica's request
    context, and on the response itself."""
    request_id = _get_serve_request_context().request_id
    return request_id if request_id and request_id == headers.get(REQUEST_ID_HEADER) else None
