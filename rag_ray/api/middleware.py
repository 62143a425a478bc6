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

import logging
import sys
import time
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_ray.api.errors import unexpected_response
from rag_ray.observability.context import REQUEST_ID_HEADER, accept_request_id, log_context

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


class RequestContext:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = accept_request_id(headers.get(REQUEST_ID_HEADER))
        behind_serve = serve_request_id(headers) is not None  # Serve's proxy adds the response header itself
        scope.setdefault("state", {})["request_id"] = request_id
        outcome: dict[str, Any] = {"status": 500, "started": False}
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome.update(status=message["status"], started=True)
                if not behind_serve:
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


def serve_request_id(headers: Headers) -> str | None:
    """The id Ray Serve's proxy gave this HTTP request, when this app runs in a Serve replica: the proxy puts it in the
    request's ``x-request-id`` and the replica in its request context (Ray is never imported here: only a process
    that already runs Serve has the module)."""
    context = sys.modules.get("ray.serve.context")
    getter = getattr(context, "_get_serve_request_context", None)
    if getter is None:
        return None
    try:
        current = getter()
    except Exception:  # a Ray version without it: act as a plain ASGI app
        return None
    request_id = getattr(current, "request_id", "")
    return str(request_id) if request_id and request_id == headers.get(REQUEST_ID_HEADER) else None


def _log_access(scope: Scope, status: int, duration_ms: float) -> None:
    path = scope.get("path", "")
    level = logging.ERROR if status >= 500 else logging.DEBUG if path in QUIET_PATHS and status < 400 \
        else logging.INFO
    route = getattr(scope.get("route"), "path", None) or path
    principal = scope.get("state", {}).get("principal")
    user = getattr(principal, "user_id", None) or "-"
    access_log.log(level, "%s %s %d %.1fms user=%s", scope.get("method", ""), path, status, duration_ms, user,
                   extra={"method": scope.get("method", ""), "path": path, "route": route, "status": status,
                          "duration_ms": round(duration_ms, 2), "user": user})
