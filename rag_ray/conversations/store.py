"""Conversations in the metadata DB (``conversations``, ``conversation_turns``; migration 0007).

Every read and write is scoped to the owner: another user's conversation is indistinguishable from a missing one
(``NotFound``). Conversations whose last turn is older than the retention are purged (``purge``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from rag_ray.errors import NotFound, PayloadTooLarge
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import AnswerRecord, ConversationRecord, ConversationTurnRecord, utcnow

TITLE_CHARS = 120


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str
    condensed_query: str | None = None  # user turns: the self-contained query retrieval used
    answer_id: str | None = None  # assistant turns: the answer record
    created_at: datetime | None = None


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    user_id: str
    title: str
    turn_count: int
    created_at: datetime
    updated_at: datetime
    turns: list[Turn] = field(default_factory=list)


class ConversationStore:
    def __init__(self, db: MetadataDB, *, max_turns: int = 200, clock: Callable[[], datetime] = utcnow):
        self.db = db
        self.max_turns = max_turns
        self.clock = clock

    def get(self, user_id: str, conversation_id: str) -> Conversation:
        with self.db.session() as s:
            row = self._owned(s, user_id, conversation_id)
            turns = s.scalars(select(ConversationTurnRecord)
                              .where(ConversationTurnRecord.conversation_id == conversation_id)
                              .order_by(ConversationTurnRecord.position)).all()
            return _conversation(row, [Turn(t.role, t.content, t.condensed_query, t.answer_id, t.created_at)
                                       for t in turns])

    def require(self, user_id: str, conversation_id: str, adding: int) -> None:
        """404 unless the caller owns it; 413 when ``adding`` more turns would pass the cap."""
        with self.db.session() as s:
            row = self._owned(s, user_id, conversation_id)
            self._check_room(row.turn_count, adding)

    def list(self, user_id: str, *, limit: int = 50, offset: int = 0) -> list[Conversation]:
        with self.db.session() as s:
            rows = s.scalars(select(ConversationRecord).where(ConversationRecord.user_id == user_id)
                             .order_by(ConversationRecord.updated_at.desc(), ConversationRecord.conversation_id)
                             .limit(limit).offset(offset)).all()
            return [_conversation(r) for r in rows]

    def delete(self, user_id: str, conversation_id: str) -> None:
        with self.db.session() as s:
            s.delete(self._owned(s, user_id, conversation_id))

    def append(self, user_id: str, conversation_id: str | None, turns: Sequence[Turn]) -> str:
        """Add ``turns`` to the caller's conversation (None: a new one, titled by its first turn); its id."""
        now = self.clock()
        with self.db.session() as s:
            if conversation_id is None:
                row = ConversationRecord(conversation_id=f"conv-{uuid.uuid4().hex}", user_id=user_id,
                                         title=_title(turns), turn_count=0, created_at=now, updated_at=now)
                s.add(row)
                s.flush()
            else:
                row = self._owned(s, user_id, conversation_id, lock=True)
            self._check_room(row.turn_count, len(turns))
            for offset, turn in enumerate(turns):
                s.add(ConversationTurnRecord(conversation_id=row.conversation_id, position=row.turn_count + offset,
                                             role=turn.role, content=turn.content,
                                             condensed_query=turn.condensed_query, answer_id=turn.answer_id,
                                             created_at=now))
            row.turn_count += len(turns)
            row.updated_at = now
            return row.conversation_id

    def purge(self, retention: timedelta) -> int:
        """Delete conversations idle for longer than ``retention`` (their turns and answer records with them)."""
        cutoff = self.clock() - retention
        with self.db.session() as s:
            ids = list(s.scalars(select(ConversationRecord.conversation_id)
                                 .where(ConversationRecord.updated_at < cutoff)))
            if ids:
                s.execute(delete(AnswerRecord).where(AnswerRecord.conversation_id.in_(ids)))
                s.execute(delete(ConversationTurnRecord).where(ConversationTurnRecord.conversation_id.in_(ids)))
                s.execute(delete(ConversationRecord).where(ConversationRecord.conversation_id.in_(ids)))
            s.execute(delete(AnswerRecord).where(AnswerRecord.conversation_id.is_(None),
                                                 AnswerRecord.created_at < cutoff))
            return len(ids)

    # ---- helpers ----
    @staticmethod
    def _owned(s: Session, user_id: str, conversation_id: str, *, lock: bool = False) -> ConversationRecord:
        query = select(ConversationRecord).where(ConversationRecord.conversation_id == conversation_id,
                                                 ConversationRecord.user_id == user_id)
        row = s.scalars(query.with_for_update() if lock else query).first()
        if row is None:
            raise NotFound(f"no conversation {conversation_id!r}", field="conversation_id")
        return row

    def _check_room(self, turn_count: int, adding: int) -> None:
        if turn_count + adding > self.max_turns:
            raise PayloadTooLarge(f"the conversation has {turn_count} messages; at most {self.max_turns} "
                                  f"(RAG_CONVERSATION_MAX_TURNS) — start a new one", field="conversation_id")


def _title(turns: Sequence[Turn]) -> str:
    first = next((t.content for t in turns if t.role == "user"), "")
    return " ".join(first.split())[:TITLE_CHARS]


def _conversation(row: ConversationRecord, turns: list[Turn] | None = None) -> Conversation:
    return Conversation(row.conversation_id, row.user_id, row.title, row.turn_count, row.created_at, row.updated_at,
                        turns or [])
