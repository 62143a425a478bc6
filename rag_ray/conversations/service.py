"""Conversation memory for the RAG and chat routes: ``begin`` a turn (load the caller's history, make the question
self-contained), answer it, then ``finish`` it (store the question and the answer). Nothing is stored before
``finish``, so a request that fails leaves the conversation as it was.

A request names its conversation with ``conversation_id``: absent → no memory (an OpenAI-style client may still
send the earlier messages itself), ``"new"`` → a new conversation (its id comes back in the response), else the id
of one of the caller's conversations (another user's, or an unknown one, is a 404).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from rag_ray.conversations.condense import Condensed, Condenser
from rag_ray.conversations.store import Conversation, ConversationStore, Turn
from rag_ray.llm.base import ChatMessage
from rag_ray.types import Principal

NEW = "new"  # the conversation_id that starts a conversation
PURGE_EVERY_S = 3600.0


@dataclass(frozen=True)
class Thread:
    """One turn in progress."""

    question: str
    condensed: Condensed
    history: list[ChatMessage] = field(default_factory=list)  # what came before, oldest first
    conversation_id: str | None = None  # the stored conversation (None with ``remember``: created by ``finish``)
    remember: bool = False

    @property
    def query(self) -> str:
        """The self-contained question retrieval uses."""
        return self.condensed.query


class ConversationService:
    def __init__(self, store: ConversationStore, condenser: Condenser, *, retention_days: int = 30,
                 history_messages: int = 40):
        self.store = store
        self.condenser = condenser
        self.retention_days = retention_days
        self.history_messages = history_messages  # the latest stored messages a turn sees
        self._purged_at = 0.0

    async def begin(self, principal: Principal, conversation_id: str | None, question: str, *,
                    history: Sequence[ChatMessage] = (), condense: bool = True) -> Thread:
        """Validate the conversation (404 foreign/unknown, 413 full) and condense ``question``; stores nothing.
        ``history``: earlier messages the client sent itself (used when no stored conversation is named)."""
        remember = conversation_id is not None
        stored_id = None if conversation_id in (None, NEW) else conversation_id
        past = list(history)
        if stored_id is not None:
            past = await asyncio.to_thread(self._history, principal.user_id, stored_id)
        condensed = await self.condenser.condense(past, question) if condense else Condensed(question, "none")
        return Thread(question, condensed, past, stored_id, remember)

    def _history(self, user_id: str, conversation_id: str) -> list[ChatMessage]:
        self.store.require(user_id, conversation_id, adding=2)
        turns = self.store.get(user_id, conversation_id).turns[-self.history_messages:]
        return [ChatMessage("user" if t.role == "user" else "assistant", t.content) for t in turns]

    async def finish(self, principal: Principal, thread: Thread, answer: str, answer_id: str | None) -> str | None:
        """Store the question and its answer (when the request named a conversation); the conversation's id."""
        if not thread.remember:
            return None
        condensed = thread.query if thread.condensed.method != "none" else None
        turns = [Turn("user", thread.question, condensed_query=condensed),
                 Turn("assistant", answer, answer_id=answer_id)]
        conversation_id = await asyncio.to_thread(self.store.append, principal.user_id, thread.conversation_id, turns)
        await self._purge_if_due()
        return conversation_id

    async def get(self, principal: Principal, conversation_id: str) -> Conversation:
        return await asyncio.to_thread(self.store.get, principal.user_id, conversation_id)

    async def list(self, principal: Principal, *, limit: int, offset: int) -> list[Conversation]:
        return await asyncio.to_thread(self.store.list, principal.user_id, limit=limit, offset=offset)

    async def delete(self, principal: Principal, conversation_id: str) -> None:
        await asyncio.to_thread(self.store.delete, principal.user_id, conversation_id)

    async def purge(self) -> int:
        """Drop what is older than ``RAG_CONVERSATION_RETENTION_DAYS`` (0: keep forever)."""
        if self.retention_days <= 0:
            return 0
        return await asyncio.to_thread(self.store.purge, timedelta(days=self.retention_days))

    async def _purge_if_due(self) -> None:
        now = time.monotonic()
        if now - self._purged_at >= PURGE_EVERY_S:
            self._purged_at = now
            await self.purge()


def with_history(history: Sequence[ChatMessage], messages: Sequence[ChatMessage], max_chars: int) -> list[ChatMessage]:
    """``messages`` with as much of the latest ``history`` as fits ``max_chars`` in all, after their leading system
    messages (the server never fails a request for history it added: the oldest turns are left out)."""
    budget = max_chars - sum(len(m.content) for m in messages)
    kept: list[ChatMessage] = []
    for message in reversed(history):
        budget -= len(message.content)
        if budget < 0:
            break
        kept.append(message)
    lead = 0
    while lead < len(messages) and messages[lead].role == "system":
        lead += 1
    return [*messages[:lead], *reversed(kept), *messages[lead:]]

