"""Draining: once the server starts to stop, a new request gets 503 ``shutting_down`` with ``Retry-After`` (and
``Connection: close``), ``/health`` included, so a load balancer sends it elsewhere; the requests in flight finish
with every backend still up. ``Drain.until_idle()`` says when the last of them is done.

Whoever stops the server calls ``Drain.begin()``: on Ray, ``deployments/drain.py`` relays it to every router replica.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from rag_ray.api.errors import error_response
from rag_ray.errors import ShuttingDown

RETRY_AFTER_S = 5.0  # about how long a restart takes to answer again (or a load balancer to drop this server)


class Drain:
    """Whether this app takes new requests, and how many it is still answering."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.draining = True

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle.set()

    async def until_idle(self) -> None:
        await self._idle.wait()


class DrainGate:
    """ASGI middleware: counts the requests in flight, and answers new ones 503 while draining."""

    def __init__(self, app: ASGIApp, drain: Drain):
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            refused = error_response(ShuttingDown("the server is shutting down; retry the request",
                                                  retry_after=RETRY_AFTER_S))
            refused.headers["Connection"] = "close"  # the client's next try opens a connection, maybe elsewhere
            await refused(scope, receive, send)
            return
        self.drain.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.leave()
