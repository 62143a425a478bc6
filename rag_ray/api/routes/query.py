"""``POST /query``: retrieve (``mode: search``) or retrieve and answer (``mode: rag``) through ``services.rag``.

``mode: rag`` is the RAG pipeline (``rag_ray.generation.rag``): the passages are fitted to the window of the model
that answers, so any ``k`` works with any model; ``context`` says which passages were used (``[n]`` in the answer is
``used[n-1]``), which were dropped, and how the prompt was fitted (``window``: the model's window, the prompt's
tokens and ``max_tokens``, lowered when the answer had to shrink to fit). Only a ``query`` that alone leaves no room
for an answer is a 422 (naming ``query``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from rag_ray.api.deps import PrincipalDep, ServicesDep
from rag_ray.api.middleware import request_timeout_field, use_request_timeout
from rag_ray.generation.formats import Citation
from rag_ray.generation.rag import RagAnswer, RagQuestion, RetrievalOptions
from rag_ray.generation.service import CitationOut, PassagesOut
from rag_ray.retrieval.service import DEFAULT_K

router = APIRouter(tags=["query"])


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "머신러닝 알고리즘의 종류와 특징", "mode": "rag", "k": 5, "llm_provider": "openai",
         "model": "gpt-4"}]})

    query: str = Field(min_length=1, max_length=4000)
    mode: Literal["rag", "search"] = "rag"
    k: int | None = Field(None, ge=1, le=100, description=f"passages to retrieve (default {DEFAULT_K})")
    search_strategy: Literal["dense", "sparse", "hybrid"] | None = Field(
        None, description="default: hybrid where the vector store has BM25, else dense")
    llm_provider: str | None = Field(None, max_length=64)
    model: str | None = Field(None, max_length=128)
    filters: list[dict[str, Any]] | dict[str, Any] | None = None
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(256, ge=1, le=4096)
    timeout_s: float | None = request_timeout_field("RAG_QUERY_TIMEOUT_S")

    def retrieval(self) -> RetrievalOptions:
        return RetrievalOptions(k=self.k, strategy=self.search_strategy, filters=self.filters)

    def question(self) -> RagQuestion:
        return RagQuestion(self.query, self.retrieval(), provider=self.llm_provider, model=self.model,
                           temperature=self.temperature, max_tokens=self.max_tokens)


class QueryResponse(BaseModel):
    query: str
    mode: Literal["rag", "search"]
    answer: str | None
    sources: list[dict[str, Any]]  # every retrieved passage, best first
    context: PassagesOut | None = None  # rag: which passages reached the prompt
    citations: list[CitationOut] = []
    provider: str | None = None
    model: str | None = None
    usage: dict[str, int] | None = None
    timings_ms: dict[str, float] = {}


def rag_response(query: str, result: RagAnswer) -> QueryResponse:
    completion = result.completion
    return QueryResponse(query=query, mode="rag", answer=result.answer,
                         sources=[h.to_dict() for h in result.context.hits],
                         context=PassagesOut.of(result.context.fitted), citations=citations_out(result.citations),
                         provider=completion.provider, model=completion.model, usage=completion.usage.to_dict(),
                         timings_ms=result.timings_ms)


def citations_out(citations: list[Citation]) -> list[CitationOut]:
    return [CitationOut(number=c.number, chunk_id=c.chunk_id, source=c.source, snippet=c.snippet) for c in citations]


@router.post("/query", summary="Retrieve (mode=search) or retrieve and answer (mode=rag)")
async def query(body: QueryRequest, principal: PrincipalDep, services: ServicesDep) -> QueryResponse:
    use_request_timeout(body.timeout_s, services.settings.max_request_timeout_s)
    if body.mode == "search":
        hits = await services.rag.retrieve(principal, body.query, body.retrieval())
        return QueryResponse(query=body.query, mode="search", answer=None, sources=[h.to_dict() for h in hits])
    return rag_response(body.query, await services.rag.answer(principal, body.question()))
