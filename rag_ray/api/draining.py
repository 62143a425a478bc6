"""Draining: once the server starts to stop, a new request gets 503 ``shutting_down`` with ``Retry-After`` (and
``Connection: close``), ``/health`` included, so a load balancer sends it elsewhere; the requests in flight finish
with every backend still up. ``Drain.until_idle()`` says when the last of them is done.

Whoever stops the server runs ``drain_then_cut`` (the local platform in its server's loop; on Ray,
``deployments/drain.py`` relays the stop to every router replica): ``Drain.begin()``, then, once the requests in
flight have had their time (``RAG_SHUTDOWN_IN_FLIGHT_S``), ``Drain.cut()``: each is cancelled with all the work it
awaits, and ends with a 503 (or, a stream already under way, its end), so the rest of the stop fits in
``RAG_SHUTDOWN_GRACE_S`` instead of being forced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_ray.api.errors import error_response
from rag_ray.errors import ShuttingDown

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5.0  # about how long a restart takes to answer again (or a load balancer to drop this server)
CUT = "the server is shutting down: RAG_SHUTDOWN_IN_FLIGHT_S has passed"
CUT_UNWIND_S = 5.0  # how long the cut requests get to unwind (cancellation reaches their backend calls)


class Drain:
    """Whether this app takes new requests, and the requests it is still answering (each one's task)."""

    def __init__(self) -> None:
        self.draining = False
        self._requests: set[asyncio.Task[object]] = set()
        self._cut: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    def begin(self) -> None:
        self.draining = True

    def enter(self) -> asyncio.Task[object]:
        task = asyncio.current_task()
        if task is None:  # never under an ASGI server: each request runs in a task
            raise RuntimeError("a request outside a task cannot be drained")
        self._requests.add(task)
        self._idle.clear()
        return task

    def leave(self, task: asyncio.Task[object]) -> None:
        self._requests.discard(task)
        self._cut.discard(task)
        if not self._requests:
            self._idle.set()

    async def until_idle(self) -> None:
        await self._idle.wait()

    def cut(self) -> int:
        """Cancel every request still in flight; how many there were."""
        self._cut |= self._requests
        for task in self._requests:
            task.cancel(CUT)
        return len(self._requests)

    def was_cut(self, task: asyncio.Task[object]) -> bool:
        return task in self._cut


async def drain_then_cut(drain: Drain, in_flight_s: float, unwind_s: float = CUT_UNWIND_S) -> int:
    """Stop taking requests, give those in flight ``in_flight_s`` to finish, then cut the rest and give them
    ``unwind_s`` to end; how many were cut."""
    drain.begin()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(drain.until_idle(), in_flight_s)
    cut = drain.cut()
    if cut:
        log.warning("%d request(s) still running after %gs cut (RAG_SHUTDOWN_IN_FLIGHT_S)", cut, in_flight_s)
        with contextlib.suppress(TimeoutError):  # one that ignores its cancellation must not hold the stop
            await asyncio.wait_for(drain.until_idle(), unwind_s)
    return cut


class DrainGate:
    """ASGI middleware: tracks the requests in flight, answers new ones 503 while draining, and ends those cut."""

    def __init__(self, app: ASGIApp, drain: Drain):
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await _shutting_down("the server is shutting down; retry the request")(scope, receive, send)
            return
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        task = self.drain.enter()
        try:
            await self.app(scope, receive, noting_start)
        except asyncio.CancelledError:
            if not self.drain.was_cut(task) or task.uncancel() > 0:  # cancelled for another reason too
                raise
            await _end_cut(started, scope, receive, send)
        finally:
            self.drain.leave(task)


def _shutting_down(message: str) -> ASGIApp:
    refused = error_response(ShuttingDown(message, retry_after=RETRY_AFTER_S))
    refused.headers["Connection"] = "close"  # the client's next try opens a connection, maybe elsewhere
    return refused


async def _end_cut(started: bool, scope: Scope, receive: Receive, send: Send) -> None:
    """A cut request's 503, or the end of its response (a stream) where that has begun."""
    if started:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    else:
        await _shutting_down(f"{CUT}; retry the request")(scope, receive, send)
