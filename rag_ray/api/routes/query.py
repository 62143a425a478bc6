"""``POST /query``: retrieve (``mode: search``) or retrieve and answer (``mode: rag``) through ``services.rag``.

``mode: rag`` is the RAG pipeline (``rag_ray.generation.rag``): the passages are fitted to the window of the model
that answers, so any ``k`` works with any model; ``context`` says which passages were used (``[n]`` in the answer is
``used[n-1]``), which were dropped, and how the prompt was fitted (``window``: the model's window, the prompt's
tokens and ``max_tokens``, lowered when the answer had to shrink to fit). Only a ``query`` that alone leaves no room
for an answer is a 422 (naming ``query``).

``mode: rag`` also returns ``citations`` (each ``[n]``: chunk, document and the span of the supporting sentence in the
chunk text; markers pointing nowhere are removed and listed in ``dropped_markers``), the ``answer_id`` of its record
(``/answers/{id}``, feedback) and, with ``conversation_id`` (see ``routes.conversations``), the conversation and the
self-contained ``condensed_query`` retrieval used.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rag_ray.answers.turns import conclude, rag_draft
from rag_ray.api.deps import PrincipalDep, ServicesDep
from rag_ray.api.middleware import request_timeout_field, use_request_timeout
from rag_ray.api.routes.conversations import TurnOut, conversation_id_field
from rag_ray.generation.citations import CitationOut
from rag_ray.generation.rag import RagAnswer, RagQuestion, RetrievalOptions
from rag_ray.generation.service import PassagesOut
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
    conversation_id: str | None = conversation_id_field()  # mode rag only
    timeout_s: float | None = request_timeout_field("RAG_QUERY_TIMEOUT_S")

    @field_validator("conversation_id")
    @classmethod
    def _conversation_needs_rag(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("mode") != "rag":
            raise ValueError("a conversation needs mode rag")
        return value

    def retrieval(self) -> RetrievalOptions:
        return RetrievalOptions(k=self.k, strategy=self.search_strategy, filters=self.filters)

    def question(self, query: str | None = None) -> RagQuestion:
        """``query``: the self-contained form of a follow-up (default: the query as sent)."""
        return RagQuestion(query or self.query, self.retrieval(), provider=self.llm_provider, model=self.model,
                           temperature=self.temperature, max_tokens=self.max_tokens)


class QueryResponse(TurnOut):
    query: str
    mode: Literal["rag", "search"]
    answer: str | None
    sources: list[dict[str, Any]]  # every retrieved passage, best first
    context: PassagesOut | None = None  # rag: which passages reached the prompt
    citations: list[CitationOut] = Field(default_factory=list)
    dropped_markers: list[int] = Field(default_factory=list)  # [n] that pointed at no passage (removed)
    provider: str | None = None
    model: str | None = None
    usage: dict[str, int] | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)


def rag_response(query: str, result: RagAnswer, turn: TurnOut) -> QueryResponse:
    completion = result.completion
    return QueryResponse(query=query, mode="rag", answer=result.answer,
                         sources=[h.to_dict() for h in result.context.hits],
                         context=PassagesOut.of(result.context.fitted),
                         citations=[CitationOut.of(c) for c in result.citations],
                         dropped_markers=result.dropped_markers, provider=completion.provider,
                         model=completion.model, usage=completion.usage.to_dict(), timings_ms=result.timings_ms,
                         **turn.model_dump())


@router.post("/query", summary="Retrieve (mode=search) or retrieve and answer (mode=rag)")
async def query(body: QueryRequest, principal: PrincipalDep, services: ServicesDep) -> QueryResponse:
    use_request_timeout(body.timeout_s, services.settings.max_request_timeout_s)
    if body.mode == "search":
        hits = await services.rag.retrieve(principal, body.query, body.retrieval())
        return QueryResponse(query=body.query, mode="search", answer=None, sources=[h.to_dict() for h in hits])
    thread = await services.conversations.begin(principal, body.conversation_id, body.query)
    result = await services.rag.answer(principal, body.question(thread.query))
    done = await conclude(services.conversations, services.answers, principal, thread,
                          rag_draft("query", thread, result))
    return rag_response(body.query, result, TurnOut.of(thread, done))
