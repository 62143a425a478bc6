"""``GET /metrics``: Prometheus text — HTTP requests and latency, LLM provider state (circuit breakers, calls,
failures, cost), answer quality, job counts.

Readable by an admin, or by a scraper presenting ``Authorization: Bearer $RAG_METRICS_TOKEN`` (compared in constant
time), so Prometheus needs no user JWT."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from rag_ray.api.deps import ServicesDep, admin_principal, current_principal
from rag_ray.api.services import Services
from rag_ray.llm.local import TransformersLLM

router = APIRouter(tags=["admin"])
BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}
Gauges = dict[str, list[tuple[dict[str, str], float]]]

GAUGE_HELP = {
    "rag_http_requests_in_flight": "HTTP requests this replica is answering now (this scrape included)",
    "rag_llm_in_flight": "LLM calls in flight per provider",
    "rag_llm_active_generations": "generations running in each LLM backend (its own count when it keeps one)",
    "rag_llm_breaker_state": "LLM provider circuit breaker: 0 closed, 1 half-open, 2 open",
    "rag_llm_healthy": "LLM provider passed its last health check (1) or not (0)",
    "rag_llm_calls": "LLM calls per provider since start",
    "rag_llm_failures": "failed LLM calls per provider since start",
    "rag_llm_cost_usd": "LLM spend per provider since start (USD)",
    "rag_llm_queued": "requests waiting for an in-process local model",
    "rag_embedding_breaker_state": "embedding provider circuit breaker: 0 closed, 1 half-open, 2 open",
    "rag_jobs_recent": "the last 500 ingest/sync jobs by status",
    "rag_llm_quality_estimate": "estimated share of good answers per provider (Beta posterior mean of votes and "
                                "evaluation scores; what the quality strategy weights traffic by)",
    "rag_llm_feedback_votes": "votes on recorded answers per provider",
}


def scrape_token_matches(request: Request, services: Services) -> bool:
    expected = services.settings.metrics_token
    if expected is None:
        return False
    scheme, _, offered = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(),
                                                              expected.get_secret_value().encode())


async def metrics_reader(request: Request, services: ServicesDep) -> None:
    """The scrape token, else an admin's JWT or API key (401/403 otherwise)."""
    if not scrape_token_matches(request, services):
        await admin_principal(await current_principal(request, services))


def _provider_gauges(services: Services) -> Gauges:
    entries = services.llm.status()["entries"]
    gauges: Gauges = {
        "rag_llm_in_flight": [({"provider": e["id"]}, e["in_flight"]) for e in entries],
        "rag_llm_active_generations": [({"provider": e["id"]}, e["active_generations"]) for e in entries],
        "rag_llm_breaker_state": [({"provider": e["id"]}, _breaker(e)) for e in entries],
        "rag_llm_healthy": [({"provider": e["id"]}, 1.0 if e["healthy"] else 0.0) for e in entries],
        "rag_llm_calls": [({"provider": e["id"]}, e["calls"]) for e in entries],
        "rag_llm_failures": [({"provider": e["id"]}, e["failures"]) for e in entries],
        "rag_llm_cost_usd": [({"provider": e["id"]}, e["cost_usd"]) for e in entries],
    }
    gauges.update(_quality_gauges(services, [e["id"] for e in entries]))
    queued = [({"provider": e.id}, float(b.status().queued)) for e in services.llm.entries
              if isinstance(b := e.backend, TransformersLLM)]
    if queued:  # in-process only: under Serve each LLM deployment hosts its model in another process
        gauges["rag_llm_queued"] = queued
    embedding_entries: Any = services.embeddings.status()["entries"]
    gauges["rag_embedding_breaker_state"] = [({"provider": e["id"]}, _breaker(e)) for e in embedding_entries]
    return gauges


def _quality_gauges(services: Services, entry_ids: list[str]) -> Gauges:
    book = services.answers.book
    known = book.snapshot()
    votes = [({"provider": p, "vote": "up"}, float(e.evidence.up)) for p, e in sorted(known.items())]
    votes += [({"provider": p, "vote": "down"}, float(e.evidence.down)) for p, e in sorted(known.items())]
    return {"rag_llm_quality_estimate": [({"provider": i}, round(book.quality(i), 6)) for i in entry_ids],
            "rag_llm_feedback_votes": votes}


def _breaker(entry: dict[str, Any]) -> float:
    return BREAKER_VALUE.get(str(entry["breaker"]["state"]), -1)


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(metrics_reader)],
            summary="Prometheus metrics (admin, or the scrape token RAG_METRICS_TOKEN)")
async def metrics(request: Request, services: ServicesDep) -> str:
    gauges = _provider_gauges(services)
    gauges["rag_http_requests_in_flight"] = [({}, float(request.app.state.drain.in_flight))]
    if services.jobs is not None:
        by_status: dict[str, int] = {}
        for job in services.jobs.list(limit=500):
            by_status[job.status] = by_status.get(job.status, 0) + 1
        gauges["rag_jobs_recent"] = [({"status": s}, n) for s, n in sorted(by_status.items())]
    return str(request.app.state.metrics.render(gauges, GAUGE_HELP))
