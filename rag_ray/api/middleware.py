"""``RequestContext``: the outermost ASGI middleware. Every request gets a request id, every response carries it.

The id is the caller's ``X-Request-ID`` when it is short and safe (``rag_ray.observability.context``), else a new
one. It is bound (a contextvar) while the request runs, so every log line written for it, every error body
(``details.request_id``) and every provider call it makes (``X-Request-ID`` header) carries it; the caller's bearer
token is bound as a request secret, masked in any log line. One access line per request is logged at the end
(``rag_ray.access``: method, route, status, duration, user), ERROR for a 5xx.

Behind Ray Serve's HTTP proxy the proxy has already chosen the id (the caller's ``X-Request-ID`` or its own) and adds
the response header itself: the middleware takes that id and leaves the header to the proxy (no duplicate header).

It also answers the unexpected exceptions itself (``rag_ray.api.errors.unexpected_response``): Starlette's
catch-all handler runs outside the user middleware, where the id and the response header would be lost.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_ray.api.errors import error_response, unexpected_response
from rag_ray.errors import InvalidInput
from rag_ray.observability.context import REQUEST_ID_HEADER, accept_request_id, log_context
from rag_ray.observability.deadline import RequestDeadline, current_deadline, deadline_scope

access_log = logging.getLogger("rag_ray.access")
# polled by load balancers and Prometheus: logged at DEBUG unless they fail
QUIET_PATHS = frozenset({"/health", "/metrics"})


def request_credentials(headers: Headers) -> list[str]:
    """The secrets a request carries in its headers (masked in every log line written while it runs)."""
    found = []
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if token.strip():
        found.append(token.strip())
    elif scheme.strip():
        found.append(scheme.strip())
    if headers.get("x-api-key"):
        found.append(headers["x-api-key"])
    return found


ProxyRequestId = Callable[[Headers], str | None]
"""The id a fronting proxy gave this request and puts on its response itself (Ray Serve's), or None."""


class RequestContext:
    def __init__(self, app: ASGIApp, proxy_request_id: ProxyRequestId | None = None):
        self.app = app
        self.proxy_request_id = proxy_request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = accept_request_id(headers.get(REQUEST_ID_HEADER))
        behind_proxy = self.proxy_request_id is not None and self.proxy_request_id(headers) is not None
        scope.setdefault("state", {})["request_id"] = request_id
        outcome: dict[str, Any] = {"status": 500, "started": False}
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome.update(status=message["status"], started=True)
                if not behind_proxy:  # a proxy that gave the id adds the response header itself
                    MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with log_context(request_id=request_id, secrets=request_credentials(headers)):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                if outcome["started"]:  # too late for an error response: the server closes the connection
                    raise
                await unexpected_response(Request(scope), exc)(scope, receive, send_with_id)
            finally:
                _log_access(scope, outcome["status"], (time.perf_counter() - start) * 1000)


def _access_level(path: str, status: int) -> int:
    """ERROR for a failure of the server's own; WARNING for the 503 and 504 it answers by design (overloaded,
    shutting down, a provider down, a deadline passed) — expected in operation, and each retryable."""
    if status in (503, 504):
        return logging.WARNING
    if status >= 500:
        return logging.ERROR
    return logging.DEBUG if path in QUIET_PATHS and status < 400 else logging.INFO


def _log_access(scope: Scope, status: int, duration_ms: float) -> None:
    path = scope.get("path", "")
    level = _access_level(path, status)
    route = getattr(scope.get("route"), "path", None) or path
    principal = scope.get("state", {}).get("principal")
    user = getattr(principal, "user_id", None) or "-"
    if not access_log.isEnabledFor(level):
        return
    method = scope.get("method", "")
    # the record built here: ``Logger.log`` would walk the stack for a caller's file and line, the same every time
    access_log.handle(access_log.makeRecord(
        access_log.name, level, __file__, 0, "%s %s %d %.1fms user=%s", (method, path, status, duration_ms, user),
        None, extra={"method": method, "path": path, "route": route, "status": status,
                     "duration_ms": round(duration_ms, 2), "user": user}))


# ---------------------------------------------------------------------------------------------- deadlines
TIMEOUT_HEADER = "X-Request-Timeout"
DEADLINE_GRACE_S = 0.5  # the layers below raise their own, more precise 504 at the deadline; this is the backstop


@dataclass(frozen=True)
class DeadlineRule:
    """POSTs to ``prefix`` (and below it) get ``seconds`` unless they ask otherwise; ``setting`` names its source."""

    prefix: str
    seconds: float
    setting: str

    def matches(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")


class RequestDeadlines:
    """ASGI middleware for the generation routes: each request runs under a deadline (``RequestDeadline`` bound for
    everything below) and is cancelled — with all the work it awaits: provider calls, Serve handle calls, local
    generation — when the deadline passes (504) or the client disconnects before the response started. A response
    that has started (a stream) is left to the stream's own disconnect handling."""

    def __init__(self, app: ASGIApp, *, rules: Sequence[DeadlineRule], max_timeout_s: float,
                 grace_s: float = DEADLINE_GRACE_S):
        self.app, self.rules, self.max_timeout_s, self.grace_s = app, list(rules), max_timeout_s, grace_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rule = self._rule(scope)
        if rule is None:
            await self.app(scope, receive, send)
            return
        try:
            deadline = self._deadline(rule, Headers(scope=scope))
        except InvalidInput as exc:
            await error_response(exc)(scope, receive, send)
            return
        with deadline_scope(deadline):
            await _Watched(self.app, deadline, self.grace_s).run(scope, receive, send)

    def _rule(self, scope: Scope) -> DeadlineRule | None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return None
        return next((r for r in self.rules if r.matches(scope.get("path", ""))), None)

    def _deadline(self, rule: DeadlineRule, headers: Headers) -> RequestDeadline:
        raw = headers.get(TIMEOUT_HEADER)
        if raw is None:
            return RequestDeadline(rule.seconds, source=rule.setting)
        return RequestDeadline(parse_timeout(raw, self.max_timeout_s, TIMEOUT_HEADER), source=TIMEOUT_HEADER)


def parse_timeout(raw: str | float, max_timeout_s: float, field: str) -> float:
    """A request's own timeout in seconds: a number above 0 and at most ``max_timeout_s`` (422 naming ``field``)."""
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= max_timeout_s:  # also refuses nan and inf
        raise InvalidInput(f"{field} must be a number of seconds above 0 and at most {max_timeout_s:g} "
                           f"(RAG_MAX_REQUEST_TIMEOUT_S), got {str(raw)[:32]!r}", field=field)
    return seconds


def use_request_timeout(timeout_s: float | None, max_timeout_s: float, field: str = "timeout_s") -> None:
    """A body's ``timeout_s`` replaces the request's deadline (counted from its arrival)."""
    if timeout_s is None:
        return
    seconds = parse_timeout(timeout_s, max_timeout_s, field)
    deadline = current_deadline()
    if deadline is not None:
        deadline.reset(seconds, field)


class _Watched:
    """One request's app call as a task, raced against its deadline and its client's disconnect."""

    def __init__(self, app: ASGIApp, deadline: RequestDeadline, grace_s: float):
        self.app, self.deadline, self.grace_s = app, deadline, grace_s
        self.started = False
        self.body_read = False
        self.gone = asyncio.Event()
        self.listener: asyncio.Task[None] | None = None

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def app_receive() -> Message:
            if self.body_read:  # after the body only a disconnect can come: the listener owns ``receive`` now
                await self.gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
            elif not message.get("more_body", False):
                self.body_read = True
                self.listener = asyncio.ensure_future(self._listen(receive))
            return message

        async def app_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        work = asyncio.ensure_future(self.app(scope, app_receive, app_send))
        timer = asyncio.ensure_future(self._expiry())
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            await asyncio.wait({work, timer, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and not self.started:
                await _cancel(work)
                if timer.done():
                    await error_response(self.deadline.exceeded())(scope, receive, send)
                return
            await work
        finally:
            for task in (timer, gone, self.listener):
                if task is not None:
                    task.cancel()
            if not work.done():  # this middleware itself was cancelled (server shutdown)
                await _cancel(work)

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone.set()

    async def _expiry(self) -> None:
        while True:
            await self.deadline.passed()
            await asyncio.sleep(self.grace_s)
            if self.deadline.expired:  # not moved later meanwhile (a body's timeout_s)
                return


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until its work has unwound; its outcome no longer matters (nobody will read it)."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: an error raised while unwinding is not "never retrieved" noise


def request_timeout_field(default_setting: str) -> Any:
    """The ``timeout_s`` body field of a route whose default deadline is ``default_setting``."""
    return Field(None, gt=0, description=f"this request's deadline in seconds (default {default_setting}, at most "
                                         "RAG_MAX_REQUEST_TIMEOUT_S); the X-Request-Timeout header does the same")
