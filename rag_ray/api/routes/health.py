"""``GET /health`` (no auth): the server and the components it needs, each with its own status.

``database`` (the metadata DB: connects, schema at the code's revision) and ``milvus`` (the chunk collection answers)
are essential: either failing makes the answer 503 with ``status: error``. ``providers`` (LLM circuit breakers) and
the ``embedder`` only degrade it (200, ``status: degraded``). Only statuses, latencies and counts are shown; what
failed is in the server log under the response's ``X-Request-ID``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response

from rag_ray.api.deps import ServicesDep
from rag_ray.api.services import Services
from rag_ray.providers.health import (
    Health,
    database_probe,
    overall,
    providers_probe,
    run_check,
    store_probe,
)

router = APIRouter(tags=["health"])


async def component_health(services: Services) -> dict[str, Health]:
    names = ("database", "milvus", "providers")
    checks = await asyncio.gather(run_check("database", database_probe(services.db)),
                                  run_check("milvus", store_probe(services.store.count)),
                                  run_check("providers", providers_probe(services.llm)))
    components = dict(zip(names, checks, strict=True))
    components["embedder"] = Health("ok", facts={"model": f"{services.embedder.provider}:{services.embedder.model}"})
    return components


@router.get("/health", summary="Liveness and component health (no auth)")
async def health(services: ServicesDep, response: Response) -> dict[str, Any]:
    components = await component_health(services)
    status = overall(components)
    if status == "error":
        response.status_code = 503
    return {"status": status, "components": {name: c.public() for name, c in components.items()}}
