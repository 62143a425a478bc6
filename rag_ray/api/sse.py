"""Server-sent events shared by the streaming routes (``/chat/stream``, ``/v1/chat/completions``).

``relay`` is the one place a streamed answer meets the client: it checks for a disconnect between chunks and
always closes the upstream iterator, so a client that goes away stops generation at the provider.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse

from rag_ray.llm.base import close_stream

T = TypeVar("T")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def sse_event(data: Any, event: str | None = None) -> str:
    """One SSE frame: optional ``event:`` line, one ``data:`` line (JSON unless already a string)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


def event_stream(frames: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)


async def relay(request: Request, first: T | None, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    """Yield ``first`` (already pulled, so errors before it became HTTP errors) then ``rest``; stop as soon as
    the client disconnects and close ``rest`` in every case."""
    try:
        if first is not None:
            yield first
        async for item in rest:
            if await request.is_disconnected():
                return
            yield item
    finally:
        await close_stream(rest)


async def prime(iterator: AsyncIterator[T]) -> T | None:
    """Pull the first item before the response starts: failover and errors up to here keep their HTTP status."""
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None
    except BaseException:
        await close_stream(iterator)
        raise
