"""`GET /metrics` (admin): Prometheus text — HTTP counters/latency, LLM provider state, job counts."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from rag_ray.api.deps import admin_principal, get_services
from rag_ray.api.services import Services
from rag_ray.types import Principal

router = APIRouter(tags=["admin"])
_BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}


def _provider_gauges(services: Services) -> dict[str, list[tuple[dict[str, str], float]]]:
    entries = services.llm.status()["entries"]
    return {
        "rag_llm_in_flight": [({"provider": e["id"]}, e["in_flight"]) for e in entries],
        "rag_llm_breaker_state": [({"provider": e["id"]}, _BREAKER_VALUE.get(str(e["breaker"]["state"]), -1))
                                  for e in entries],
        "rag_llm_calls": [({"provider": e["id"]}, e["calls"]) for e in entries],
        "rag_llm_failures": [({"provider": e["id"]}, e["failures"]) for e in entries],
        "rag_llm_cost_usd": [({"provider": e["id"]}, e["cost_usd"]) for e in entries],
    }


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (admin)")
async def metrics(request: Request, _: Principal = Depends(admin_principal),
                  services: Services = Depends(get_services)) -> str:
    gauges = _provider_gauges(services)
    if services.jobs is not None:
        by_status: dict[str, int] = {}
        for job in services.jobs.list(limit=500):
            by_status[job.status] = by_status.get(job.status, 0) + 1
        gauges["rag_jobs_recent"] = [({"status": s}, n) for s, n in sorted(by_status.items())]
    return request.app.state.metrics.render(gauges)
