"""Awaiting a Serve handle call on behalf of a request: our own errors back from Ray's wrapper, and the call
cancelled with the task awaiting it (the request's deadline passed or its client left), so a queued call never
starts and a running one is cancelled in its replica."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError

from rag_ray.errors import RagError


def own_error(exc: BaseException, when_full: Callable[[float], RagError]) -> BaseException:
    """The ``RagError`` a replica raised, or ``when_full(retry_after)`` for a full deployment queue."""
    if isinstance(exc, BackPressureError):
        return when_full(exc.retry_after_s or 1.0)
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, RagError):
        return exc.cause
    return exc


async def awaited(response: Any, unwrap: Callable[[BaseException], BaseException]) -> Any:
    try:
        return await response
    except asyncio.CancelledError:
        response.cancel()
        raise
    except Exception as exc:
        raise unwrap(exc) from None
