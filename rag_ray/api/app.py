"""The FastAPI application: plain ASGI, testable without Ray; Serve's ingress wraps it."""

from __future__ import annotations

from fastapi import FastAPI

from rag_ray.api.draining import Drain, DrainGate
from rag_ray.api.errors import install_error_handlers
from rag_ray.api.guard import include_guarded
from rag_ray.api.limits import BodyGuard, BodyRule
from rag_ray.api.metrics import Metrics, RequestMetrics
from rag_ray.api.middleware import DeadlineRule, ProxyRequestId, RequestContext, RequestDeadlines
from rag_ray.api.routes import (
    admin,
    answers,
    auth,
    chat,
    conversations,
    documents,
    embeddings,
    extract,
    files,
    generate,
    guardrails,
    health,
    index,
    jobs,
    metrics,
    openai_compat,
    providers,
    query,
)
from rag_ray.api.services import Services
from rag_ray.config import Settings

ROUTE_MODULES = (health, query, auth, admin, chat, embeddings, generate, extract, files, jobs, documents, index,
                 openai_compat, metrics, providers, guardrails, conversations, answers)

DESCRIPTION = """rag-ray: retrieval-augmented generation on Ray.

Every route except `/health` and `/auth/token` needs `Authorization: Bearer <JWT or API key>`.
(`/metrics` also accepts the scrape token `RAG_METRICS_TOKEN`.)
Errors are JSON `{error, message, field?, details?}` with the HTTP status of their kind. Every response carries an
`X-Request-ID` (the caller's, when short and safe, else a new one); error bodies repeat it in `details.request_id`
and every server log line of the request carries it."""


def create_app(services: Services, *, proxy_request_id: ProxyRequestId | None = None) -> FastAPI:
    """The HTTP API over ``services``; ``proxy_request_id``: the request id a fronting proxy gave a request and
    answers with itself (Ray Serve's), so this app does not add a second one."""
    app = FastAPI(title="rag-ray", version="0.1.0", description=DESCRIPTION)
    app.state.services = services
    install_error_handlers(app)
    for module in ROUTE_MODULES:  # with limits, budgets and the audit actor on every route
        include_guarded(app, module.router)
    settings = services.settings
    app.add_middleware(BodyGuard, max_bytes=settings.max_request_bytes, max_json_depth=settings.max_json_depth,
                       routes={"/documents/upload": BodyRule.upload(settings.max_upload_bytes)})
    app.add_middleware(RequestDeadlines, rules=deadline_rules(settings), max_timeout_s=settings.max_request_timeout_s)
    # outside the body guard: a request still sending its body is in flight too, and a stop cuts it like any other
    app.state.drain = Drain()  # begun by whoever stops the server (local platform, or deployments/drain.py on Ray)
    app.add_middleware(DrainGate, drain=app.state.drain)
    app.state.metrics = Metrics()
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)  # every answer counted: 503s, 504s, 413s too
    # added last: outermost, so every response and log line has the request id
    app.add_middleware(RequestContext, proxy_request_id=proxy_request_id)
    return app


def deadline_rules(settings: Settings) -> list[DeadlineRule]:
    """The routes that run under a deadline (and stop when their client goes away), with their defaults."""
    chat = settings.chat_timeout_s
    return [DeadlineRule("/query", settings.query_timeout_s, "RAG_QUERY_TIMEOUT_S"),
            DeadlineRule("/generate", settings.generate_timeout_s, "RAG_GENERATE_TIMEOUT_S"),
            DeadlineRule("/chat", chat, "RAG_CHAT_TIMEOUT_S"),
            DeadlineRule("/v1/chat/completions", chat, "RAG_CHAT_TIMEOUT_S")]
