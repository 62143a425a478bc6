from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from rag_ray.api.deps import get_services
from rag_ray.api.services import Services

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness and component health (no auth)")
async def health(services: Services = Depends(get_services)) -> dict[str, object]:
    components: dict[str, str] = {}
    try:
        await asyncio.to_thread(services.retrieval.store.count)
        components["vector_store"] = "ok"
    except Exception as exc:  # health reports, never raises
        components["vector_store"] = f"error: {type(exc).__name__}"
    components["embedder"] = f"{services.embedder.provider}:{services.embedder.model}"
    open_breakers = [e["id"] for e in services.llm.status()["entries"] if e["breaker"]["state"] == "open"]
    components["llm"] = f"open circuit: {', '.join(open_breakers)}" if open_breakers else "ok"
    status = "ok" if all(not v.startswith("error") for v in components.values()) else "degraded"
    return {"status": status, "components": components}
