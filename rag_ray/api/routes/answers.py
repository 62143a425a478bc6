"""``GET /answers/{id}``: an answer's record — question (and the self-contained query retrieval used), passages used,
citations, model, scores, timings, feedback — for the user it was given to or an admin (anyone else: 404).
``POST /answers/{id}/feedback`` ``{vote: "up"|"down", text?}``: one vote per user and answer (a new one replaces it).

Votes and evaluation scores feed each provider's quality estimate (``rag_ray.answers.quality``), which the
``quality`` load-balancing strategy weights traffic by; ``/metrics`` exports it (``rag_llm_quality_estimate``).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from rag_ray.answers import StoredAnswer
from rag_ray.api.deps import PrincipalDep, ServicesDep
from rag_ray.generation.citations import CitationOut

router = APIRouter(tags=["answers"])

FEEDBACK_METRIC = "rag_answer_feedback_total"
AnswerPath = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"vote": "down",
                                                                               "text": "cites the wrong manual"}]})

    vote: Literal["up", "down"]
    text: str = Field("", max_length=4000)


class PassageOut(BaseModel):
    number: int
    chunk_id: str
    doc_id: str
    source: str
    score: float


class FeedbackOut(BaseModel):
    user_id: str
    vote: str
    text: str
    created_at: datetime


class AnswerOut(BaseModel):
    answer_id: str
    user_id: str
    created_at: datetime
    route: str
    question: str
    condensed_query: str | None
    conversation_id: str | None
    answer: str
    provider: str  # the entry that answered (provider:model)
    passages: list[PassageOut]  # [number] in the answer is passages[number - 1]
    citations: list[CitationOut]
    scores: dict[str, float]
    overall_score: float | None
    timings_ms: dict[str, float]
    usage: dict[str, int]
    feedback: list[FeedbackOut]

    @classmethod
    def of(cls, stored: StoredAnswer) -> AnswerOut:
        d = stored.draft
        return cls(answer_id=stored.answer_id, user_id=stored.user_id, created_at=stored.created_at, route=d.route,
                   question=d.question, condensed_query=d.condensed_query, conversation_id=d.conversation_id,
                   answer=d.answer, provider=d.provider,
                   passages=[PassageOut(**dataclasses.asdict(p)) for p in d.passages],
                   citations=[CitationOut.of(c) for c in d.citations], scores=d.scores,
                   overall_score=d.overall_score, timings_ms=d.timings_ms, usage=d.usage,
                   feedback=[FeedbackOut(**dataclasses.asdict(f)) for f in stored.feedback])


@router.get("/answers/{answer_id}", summary="An answer's record (yours, or any for an admin)")
async def get_answer(principal: PrincipalDep, services: ServicesDep, answer_id: str = AnswerPath) -> AnswerOut:
    return AnswerOut.of(await services.answers.get(principal, answer_id))


@router.post("/answers/{answer_id}/feedback", summary="Vote an answer up or down (steers the quality strategy)")
async def answer_feedback(body: FeedbackIn, request: Request, principal: PrincipalDep, services: ServicesDep,
                          answer_id: str = AnswerPath) -> dict[str, Any]:
    provider, given = await services.answers.feedback(principal, answer_id, body.vote, body.text)
    request.app.state.metrics.inc(FEEDBACK_METRIC, {"provider": provider, "vote": body.vote},
                                  help="Votes on answers, by the provider that answered")
    return {"answer_id": answer_id, "provider": provider, "vote": given.vote, "text": given.text,
            "quality_estimate": round(services.answers.book.quality(provider), 6)}
