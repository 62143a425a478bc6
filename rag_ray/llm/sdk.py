"""Shared shape of the SDK-backed chat providers: error translation, timing, and the streaming contract
(deltas, then exactly one final chunk carrying ``finish_reason`` and usage; a stream that ends without
its final event raises ``ProviderConnectionError``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from rag_ray.llm.base import ChatMessage, Completion, GenerationParams, StreamChunk, Usage
from rag_ray.observability.context import outgoing_headers
from rag_ray.sdk.errors import StatusInfo, finish_reason, stream_ended_early, translate

FINISH_REASONS: Mapping[str, str] = {
    "stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "length": "length", "max_tokens": "length",
    "content_filter": "content_filter", "safety": "content_filter", "tool_calls": "tool_calls",
    "tool_use": "tool_calls", "finish_reason_unspecified": "stop",
}


def split_system(messages: Sequence[ChatMessage]) -> tuple[str | None, list[ChatMessage]]:
    """Providers with a separate system field: join system messages, keep the rest in order."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    return (system or None), [m for m in messages if m.role != "system"]


class SDKChatLLM:
    """Subclasses implement ``_complete`` and ``_chunks`` in SDK terms and ``_status_of`` for errors."""

    provider = "sdk"
    model = ""

    def _status_of(self, exc: BaseException) -> StatusInfo | None:
        return None

    async def _complete(self, messages: Sequence[ChatMessage], params: GenerationParams
                        ) -> tuple[str, Usage, object]:
        raise NotImplementedError

    def _chunks(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        """Yield content deltas; a chunk with ``finish_reason`` set (raw) ends the stream (usage optional)."""
        raise NotImplementedError

    def _error(self, exc: BaseException) -> BaseException:
        return translate(exc, provider=self.provider, status_of=self._status_of)

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        """``params.timeout_s`` (the caller's remaining budget) bounds the whole call: the SDK gets it as its own
        timeout and the call is cancelled at it, which aborts the HTTP request (SDKs without a per-request timeout,
        e.g. Ollama's, are bounded all the same)."""
        start = time.perf_counter()
        try:
            async with asyncio.timeout(params.timeout_s):
                text, usage, raw_finish = await self._complete(messages, params)
        except Exception as exc:
            raise self._error(exc) from exc
        return Completion(text=text, provider=self.provider, model=self.model, usage=usage,
                          finish_reason=finish_reason(raw_finish, FINISH_REASONS),
                          latency_ms=(time.perf_counter() - start) * 1000)

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        pieces = 0
        final: StreamChunk | None = None
        try:
            async for chunk in self._chunks(messages, params):
                if chunk.delta:
                    pieces += 1
                    yield StreamChunk(delta=chunk.delta)
                if chunk.finish_reason is not None:
                    final = chunk
                elif chunk.usage is not None and final is not None:
                    final.usage = chunk.usage  # OpenAI sends usage in a chunk after the finish one
        except Exception as exc:
            raise self._error(exc) from exc
        if final is None:
            raise stream_ended_early(self.provider)
        yield StreamChunk(finish_reason=finish_reason(final.finish_reason, FINISH_REASONS),
                          usage=final.usage or Usage(0, pieces))


def timeout_kw(params: GenerationParams, name: str = "timeout") -> dict[str, Any]:
    return {name: params.timeout_s} if params.timeout_s else {}


def request_id_kw() -> dict[str, Any]:
    """``extra_headers`` carrying the current request id (OpenAI/Anthropic SDKs), so the provider's logs and ours
    can be matched; nothing outside a request."""
    headers = outgoing_headers()
    return {"extra_headers": headers} if headers else {}
