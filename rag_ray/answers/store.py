"""Answer records and feedback in the metadata DB (``answers``, ``answer_feedback``; migration 0007).

An answer is readable — and votable — by the user it was given to and by admins; to anyone else it does not exist
(``NotFound``). One vote per user and answer: a new vote replaces the previous one.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from rag_ray.answers.quality import Evidence
from rag_ray.errors import NotFound
from rag_ray.generation.citations import Citation
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import AnswerFeedbackRecord, AnswerRecord, utcnow
from rag_ray.types import Principal

Vote = Literal["up", "down"]


@dataclass(frozen=True)
class PassageUsed:
    """Passage ``number`` of the prompt."""

    number: int
    chunk_id: str
    doc_id: str
    source: str
    score: float


@dataclass(frozen=True)
class AnswerDraft:
    """An answer about to be recorded. ``provider``: the entry that served it (``provider:model``)."""

    route: str
    question: str
    answer: str
    provider: str
    condensed_query: str | None = None
    conversation_id: str | None = None
    passages: list[PassageUsed] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    overall_score: float | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Feedback:
    user_id: str
    vote: Vote
    text: str
    created_at: datetime


@dataclass(frozen=True)
class StoredAnswer:
    answer_id: str
    user_id: str
    created_at: datetime
    draft: AnswerDraft
    feedback: list[Feedback]


class AnswerStore:
    def __init__(self, db: MetadataDB, *, clock: Callable[[], datetime] = utcnow):
        self.db = db
        self.clock = clock

    def record(self, user_id: str, draft: AnswerDraft) -> str:
        answer_id = f"ans-{uuid.uuid4().hex}"
        with self.db.session() as s:
            s.add(AnswerRecord(
                answer_id=answer_id, user_id=user_id, conversation_id=draft.conversation_id, route=draft.route,
                question=draft.question, condensed_query=draft.condensed_query, answer=draft.answer,
                provider=draft.provider, passages=[dataclasses.asdict(p) for p in draft.passages],
                citations=[dataclasses.asdict(c) for c in draft.citations], scores=dict(draft.scores),
                overall_score=draft.overall_score, timings=dict(draft.timings_ms), usage=dict(draft.usage),
                created_at=self.clock()))
        return answer_id

    def attach(self, answer_id: str, conversation_id: str) -> None:
        """Record which conversation the answer belongs to (known once the turn is stored)."""
        with self.db.session() as s:
            row = s.get(AnswerRecord, answer_id)
            if row is not None:
                row.conversation_id = conversation_id

    def get(self, principal: Principal, answer_id: str) -> StoredAnswer:
        with self.db.session() as s:
            row = _visible(s, principal, answer_id)
            votes = s.scalars(select(AnswerFeedbackRecord).where(AnswerFeedbackRecord.answer_id == answer_id)
                              .order_by(AnswerFeedbackRecord.id)).all()
            return StoredAnswer(row.answer_id, row.user_id, row.created_at, _draft(row),
                                [Feedback(v.user_id, _vote(v.vote), v.text, v.created_at) for v in votes])

    def feedback(self, principal: Principal, answer_id: str, vote: Vote, text: str) -> tuple[str, Feedback]:
        """Record ``principal``'s vote (replacing theirs); (the answer's provider, the vote)."""
        now = self.clock()
        with self.db.session() as s:
            row = _visible(s, principal, answer_id)
            mine = s.scalars(select(AnswerFeedbackRecord).where(AnswerFeedbackRecord.answer_id == answer_id,
                                                                AnswerFeedbackRecord.user_id == principal.user_id)
                             ).first()
            if mine is None:
                s.add(AnswerFeedbackRecord(answer_id=answer_id, user_id=principal.user_id, vote=vote, text=text,
                                           created_at=now))
            else:
                mine.vote, mine.text, mine.created_at = vote, text, now
            return row.provider, Feedback(principal.user_id, vote, text, now)

    def evidence(self) -> dict[str, Evidence]:
        """Votes and evaluation scores per provider, over every recorded answer."""
        with self.db.session() as s:
            votes = s.execute(
                select(AnswerRecord.provider,
                       func.sum(case((AnswerFeedbackRecord.vote == "up", 1), else_=0)),
                       func.sum(case((AnswerFeedbackRecord.vote == "down", 1), else_=0)))
                .join(AnswerFeedbackRecord, AnswerFeedbackRecord.answer_id == AnswerRecord.answer_id)
                .group_by(AnswerRecord.provider)).all()
            scores = s.execute(
                select(AnswerRecord.provider, func.sum(AnswerRecord.overall_score), func.count())
                .where(AnswerRecord.overall_score.is_not(None)).group_by(AnswerRecord.provider)).all()
        found: dict[str, Evidence] = {}
        for provider, up, down in votes:
            found[provider] = Evidence(up=int(up or 0), down=int(down or 0))
        for provider, total, count in scores:
            found[provider] = dataclasses.replace(found.get(provider, Evidence()), score_sum=float(total or 0.0),
                                                  scored=int(count))
        return found


def _visible(s: Session, principal: Principal, answer_id: str) -> AnswerRecord:
    row = s.get(AnswerRecord, answer_id)
    if row is None or not (principal.is_admin or row.user_id == principal.user_id):
        raise NotFound(f"no answer {answer_id!r}", field="answer_id")
    return row


def _draft(row: AnswerRecord) -> AnswerDraft:
    return AnswerDraft(route=row.route, question=row.question, answer=row.answer, provider=row.provider,
                       condensed_query=row.condensed_query, conversation_id=row.conversation_id,
                       passages=[PassageUsed(**p) for p in row.passages],
                       citations=[Citation(**c) for c in row.citations], scores=dict(row.scores),
                       overall_score=row.overall_score, timings_ms=dict(row.timings), usage=dict(row.usage))


def _vote(value: str) -> Vote:
    return "up" if value == "up" else "down"
