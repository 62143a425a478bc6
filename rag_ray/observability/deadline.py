"""The deadline of the request being served: one typed object, bound in a contextvar by the HTTP edge
(``rag_ray.api.middleware.RequestDeadlines``) and read by every hop below it.

    with deadline_scope(RequestDeadline(30.0, source="RAG_QUERY_TIMEOUT_S")):
        ...                                   # the provider pool, generators and adapters read current_deadline()
    budget = remaining_budget(60.0)           # min(60, what the request has left)

A route may replace the budget with the request's own (``reset``: a body's ``timeout_s``). It follows the request
through ``await``, tasks and ``asyncio.to_thread``; across a Ray Serve handle it does not, so the handle passes the
remaining budget on (``GenerationParams.timeout_s``). ``exceeded`` is the one 504 every layer raises when it passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from rag_ray.errors import RequestTimeout

Clock = Callable[[], float]
CLOCK_SLACK_S = 0.01  # a timer set for the deadline may fire a hair before it: that counts as passed


class RequestDeadline:
    """An absolute instant on a monotonic clock, with where its budget came from (named by the 504)."""

    def __init__(self, seconds: float, *, source: str, clock: Clock = time.monotonic):
        self.seconds = seconds
        self.source = source
        self._clock = clock
        self.started = clock()
        self.at = self.started + seconds
        self._changed: asyncio.Event | None = None

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= CLOCK_SLACK_S

    def reset(self, seconds: float, source: str) -> None:
        """The request's own budget (a body's ``timeout_s``), counted from when the request arrived."""
        self.at, self.seconds, self.source = self.started + seconds, seconds, source
        if self._changed is not None:
            self._changed.set()

    def exceeded(self, doing: str = "") -> RequestTimeout:
        """The 504 for this request: how long it had, where that came from, what it was doing."""
        what = f" while {doing}" if doing else ""
        return RequestTimeout(f"the request did not finish within its {self.seconds:g}s deadline{what} "
                              f"(set by {self.source}; send a larger X-Request-Timeout header or timeout_s field "
                              "to wait longer)", details={"timeout_s": self.seconds, "source": self.source})

    async def passed(self) -> None:
        """Return when the deadline passes (following any ``reset`` meanwhile)."""
        self._changed = self._changed or asyncio.Event()
        while (left := self.remaining()) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()


deadline_var: ContextVar[RequestDeadline | None] = ContextVar("rag_request_deadline", default=None)


def current_deadline() -> RequestDeadline | None:
    return deadline_var.get()


@contextlib.contextmanager
def deadline_scope(deadline: RequestDeadline | None) -> Iterator[RequestDeadline | None]:
    token = deadline_var.set(deadline)
    try:
        yield deadline
    finally:
        deadline_var.reset(token)


def remaining_budget(cap: float | None = None) -> float | None:
    """Seconds this call may take: ``cap`` and the request's remaining time, whichever is smaller (None: unbounded)."""
    deadline = current_deadline()
    left = deadline.remaining() if deadline is not None else math.inf
    budget = min(left, math.inf if cap is None else cap)
    return None if math.isinf(budget) else budget


def check_deadline(doing: str = "") -> None:
    """Raise the request's 504 when its deadline has passed (before starting work nobody will wait for)."""
    deadline = current_deadline()
    if deadline is not None and deadline.expired:
        raise deadline.exceeded(doing)
