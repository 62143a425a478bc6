"""``MeteredLLMManager``: the LLM manager with every call of a request charged to its caller's budgets.

It shares the wrapped manager's pool (entries, breakers, statistics), so it is the same manager with one addition:
a call made while a caller is bound (``rag_ray.guard.context``) reserves against the caller's token and cost budgets
before any provider is asked, and is settled to the provider's usage when it ends — for a stream, when the stream
ends or is closed (usage it did not report is estimated from its text). Refusals raise ``RateLimited`` outside the
pool's retry loop, so a spent budget never counts as a provider failure.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

from rag_ray.generation.textutil import estimate_tokens
from rag_ray.guard.context import Caller, current_caller
from rag_ray.guard.limits import MICROS
from rag_ray.guard.service import GuardService, Reservation
from rag_ray.llm.base import ChatMessage, Completion, GenerationParams, StreamChunk, Usage, close_stream
from rag_ray.providers.manager import LLMManager, ManagedStream

T = TypeVar("T")

PER_MESSAGE_TOKENS = 4  # role and framing tokens chat formats add per message


def estimate_prompt_tokens(messages: Sequence[ChatMessage]) -> int:
    return sum(estimate_tokens(m.content) + PER_MESSAGE_TOKENS for m in messages) + PER_MESSAGE_TOKENS


class MeteredLLMManager(LLMManager):
    def __init__(self, inner: LLMManager, guard: GuardService):  # no super().__init__: shares inner's pool
        self.pool = inner.pool
        self.inner = inner
        self.guard = guard

    def _estimate(self, messages: Sequence[ChatMessage], params: GenerationParams, provider: str | None,
                  model: str | None) -> tuple[int, int]:
        """(tokens, micro-USD) a call may use at most: the dearest entry it may land on, at ``max_tokens``."""
        usage = Usage(estimate_prompt_tokens(messages), params.max_tokens)
        prices = [e.price.cost(usage) for e in self.pool.select(provider, model)]
        return usage.total_tokens, math.ceil(max(prices, default=0.0) * MICROS)

    async def _reserve(self, caller: Caller, messages: Sequence[ChatMessage], params: GenerationParams,
                       provider: str | None, model: str | None) -> Reservation:
        tokens, cost = self._estimate(messages, params, provider, model)
        if self.guard.limits.known_empty():
            return Reservation(caller, tokens, cost)  # no budgets anywhere: nothing to hold
        return await asyncio.to_thread(self.guard.reserve, caller, tokens, cost)

    async def _reserved(self, caller: Caller, messages: Sequence[ChatMessage], params: GenerationParams,
                        provider: str | None, model: str | None, call: Callable[[], Awaitable[T]]
                        ) -> tuple[Reservation, T]:
        """``call()`` under a reservation of its worst case; the reservation is released if the call fails."""
        reservation = await self._reserve(caller, messages, params, provider, model)
        try:
            return reservation, await call()
        except BaseException:
            await asyncio.to_thread(self.guard.release, reservation)
            raise

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams | None = None, *,
                       strategy: str | None = None, provider: str | None = None, model: str | None = None,
                       deadline_s: float | None = None) -> Completion:
        caller = current_caller()
        params = params or GenerationParams()
        call = partial(super().generate, messages, params, strategy=strategy, provider=provider, model=model,
                       deadline_s=deadline_s)
        if caller is None:
            return await call()
        reservation, completion = await self._reserved(caller, messages, params, provider, model, call)
        await asyncio.to_thread(self.guard.settle, reservation, provider=completion.provider, model=completion.model,
                                prompt_tokens=completion.usage.prompt_tokens,
                                completion_tokens=completion.usage.completion_tokens, cost_usd=completion.cost_usd)
        return completion

    async def open_stream(self, messages: Sequence[ChatMessage], params: GenerationParams | None = None, *,
                          strategy: str | None = None, provider: str | None = None, model: str | None = None,
                          deadline_s: float | None = None) -> ManagedStream:
        caller = current_caller()
        params = params or GenerationParams()
        call = partial(super().open_stream, messages, params, strategy=strategy, provider=provider, model=model,
                       deadline_s=deadline_s)
        if caller is None:
            return await call()
        reservation, opened = await self._reserved(caller, messages, params, provider, model, call)
        return ManagedStream(opened.entry, self._settled(opened, reservation, estimate_prompt_tokens(messages)))

    async def _settled(self, opened: ManagedStream, reservation: Reservation, prompt_estimate: int
                       ) -> AsyncIterator[StreamChunk]:
        usage: Usage | None = None
        text: list[str] = []
        try:
            async for chunk in opened.chunks:
                usage = chunk.usage or usage
                text.append(chunk.delta)
                yield chunk
        finally:
            used = usage or Usage(prompt_estimate, estimate_tokens("".join(text)) if text else 0)
            entry = opened.entry
            await asyncio.to_thread(self.guard.settle, reservation, provider=entry.provider, model=entry.model,
                                    prompt_tokens=used.prompt_tokens, completion_tokens=used.completion_tokens,
                                    cost_usd=entry.price.cost(used))
            await close_stream(opened.chunks)
