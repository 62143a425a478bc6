"""Answer records, feedback, and the per-provider quality estimate they feed (``QualityBook``, read by the
``quality`` load-balancing strategy). The estimate is rebuilt from the database after every vote this replica
takes and at least every ``refresh_s`` seconds when answers are recorded, so replicas converge on the same view."""

from __future__ import annotations

import asyncio
import time

from rag_ray.answers.quality import QualityBook
from rag_ray.answers.store import AnswerDraft, AnswerStore, Feedback, StoredAnswer, Vote
from rag_ray.types import Principal


class AnswerService:
    def __init__(self, store: AnswerStore, book: QualityBook | None = None, *, refresh_s: float = 5.0):
        self.store = store
        self.book = book or QualityBook()
        self.refresh_s = refresh_s
        self._refreshed_at = float("-inf")

    async def record(self, principal: Principal, draft: AnswerDraft) -> str:
        answer_id = await asyncio.to_thread(self.store.record, principal.user_id, draft)
        if time.monotonic() - self._refreshed_at >= self.refresh_s:
            await self.refresh()
        return answer_id

    async def attach(self, answer_id: str, conversation_id: str | None) -> None:
        if conversation_id is not None:
            await asyncio.to_thread(self.store.attach, answer_id, conversation_id)

    async def get(self, principal: Principal, answer_id: str) -> StoredAnswer:
        return await asyncio.to_thread(self.store.get, principal, answer_id)

    async def feedback(self, principal: Principal, answer_id: str, vote: Vote, text: str) -> tuple[str, Feedback]:
        provider, given = await asyncio.to_thread(self.store.feedback, principal, answer_id, vote, text)
        await self.refresh()
        return provider, given

    async def refresh(self) -> None:
        self._refreshed_at = time.monotonic()
        self.book.replace(await asyncio.to_thread(self.store.evidence))
