"""``GET /admin/providers`` (admin): every LLM and embedding provider's circuit breaker, health, load and cost — and
with ``?check=true`` a one-token call to each LLM first (``LLMManager.check_health``; breakers untouched).
``status``: ok, degraded (some LLM providers open or unhealthy) or error (all of them)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from rag_ray.api.deps import AdminDep, ServicesDep
from rag_ray.providers.health import providers_probe, run_check

router = APIRouter(prefix="/admin", tags=["admin"])
CHECK_TIMEOUT_S = 10.0


@router.get("/providers", summary="Provider health and circuit-breaker state (admin)")
async def providers(services: ServicesDep, _: AdminDep,
                    check: bool = Query(False, description="ping every provider now (one 1-token call each)")
                    ) -> dict[str, Any]:
    health = await run_check("providers", providers_probe(services.llm, ping=check, timeout_s=CHECK_TIMEOUT_S),
                             timeout_s=CHECK_TIMEOUT_S + 5)
    return {"status": health.status, "checked": check, "llm": services.llm.status(),
            "embeddings": services.embeddings.status()}
