"""The FastAPI application: plain ASGI, testable without Ray; Serve's ingress wraps it."""

from __future__ import annotations

import importlib

from fastapi import FastAPI

from rag_ray.api.errors import install_error_handlers
from rag_ray.api.limits import BodySizeLimit
from rag_ray.api.metrics import Metrics, RequestMetrics
from rag_ray.api.services import Services

# Route modules, each exposing `router`. Optional ones (not yet present) are skipped.
ROUTE_MODULES = ("health", "query", "auth", "admin", "chat", "embeddings", "generate", "extract", "files", "jobs",
                 "documents", "openai_compat", "metrics")

DESCRIPTION = """rag-ray: retrieval-augmented generation on Ray.

Every route except `/health` and `/auth/token` needs `Authorization: Bearer <JWT or API key>`.
Errors are JSON `{error, message, field?}` with the HTTP status of their kind."""


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="rag-ray", version="0.1.0", description=DESCRIPTION)
    app.state.services = services
    install_error_handlers(app)
    for name in ROUTE_MODULES:
        try:
            module = importlib.import_module(f"rag_ray.api.routes.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"rag_ray.api.routes.{name}":
                continue
            raise
        app.include_router(module.router)
    app.state.metrics = Metrics()
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    app.add_middleware(BodySizeLimit, max_bytes=services.settings.max_request_bytes,
                       exempt_prefixes=("/documents/upload",))
    return app
