from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from rag_ray.api.deps import current_principal, get_services
from rag_ray.api.services import Services
from rag_ray.llm.base import GenerationParams
from rag_ray.types import Principal

router = APIRouter(tags=["query"])


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "머신러닝 알고리즘의 종류와 특징", "mode": "rag", "k": 5, "llm_provider": "openai",
         "model": "gpt-4"}]})

    query: str = Field(min_length=1, max_length=4000)
    mode: Literal["rag", "search"] = "rag"
    k: int = Field(5, ge=1, le=100)
    search_strategy: Literal["dense", "sparse", "hybrid"] | None = Field(
        None, description="default: hybrid where the vector store has BM25, else dense")
    llm_provider: str | None = Field(None, max_length=64)
    model: str | None = Field(None, max_length=128)
    filters: list[dict[str, Any]] | dict[str, Any] | None = None
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(256, ge=1, le=4096)


@router.post("/query", summary="Retrieve (mode=search) or retrieve and answer (mode=rag)")
async def query(body: QueryRequest, principal: Principal = Depends(current_principal),
                services: Services = Depends(get_services)) -> dict[str, Any]:
    if body.mode == "search":
        hits = await services.retrieval.search(principal, body.query, k=body.k, strategy=body.search_strategy,
                                               filters=body.filters)
        return {"query": body.query, "mode": "search", "answer": None, "sources": [h.to_dict() for h in hits]}
    params = GenerationParams(temperature=body.temperature, max_tokens=body.max_tokens)
    result = await services.retrieval.answer(principal, body.query, services.llm, k=body.k,
                                             strategy=body.search_strategy, filters=body.filters, params=params,
                                             provider=body.llm_provider, model=body.model)
    return {"query": body.query, "mode": "rag", **result.to_dict()}
