"""Request body guards as ASGI middleware, ahead of any parsing.

- Size: a declared ``Content-Length`` over the cap is refused (413) before a byte of the body is read; a body
  streamed without one (chunked) is cut off as soon as it passes the cap. Routes may have their own cap (uploads),
  and the 413 names their field.
- JSON: a body that may reach a JSON parser (anything but a form: the ``/auth`` routes parse any other body as
  JSON) is read whole (it is under the cap), refused with 422 naming ``body`` if it is not UTF-8 or nests deeper
  than the limit — brackets counted outside strings, before a recursive parser sees them — then replayed.

Errors are the library's (``PayloadTooLarge``, ``InvalidInput``) rendered by ``rag_ray.api.errors``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import anyio
import numpy as np
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_ray.api.errors import error_response
from rag_ray.errors import InvalidInput, PayloadTooLarge, RagError

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the small fields around an uploaded file
INLINE_SCAN_BYTES = 256 * 1024  # larger bodies are checked off the event loop
_SCAN_CHUNK = 1 << 20

# A JSON string, or an unterminated one running to the end (so a match never fails and backtracks: linear time).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


@dataclass(frozen=True)
class BodyRule:
    """The cap for requests to a path. ``field``: what a 413 names. ``stream``: pass the body through as it
    arrives (uploads), never reading it whole for the JSON checks."""

    max_bytes: int
    field: str = "body"
    stream: bool = False

    @classmethod
    def upload(cls, max_file_bytes: int, field: str = "file") -> BodyRule:
        """A multipart upload of one file of up to ``max_file_bytes`` (the route checks the file's exact size)."""
        return cls(max_file_bytes + MULTIPART_OVERHEAD, field, stream=True)

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes", field=self.field)


class BodyGuard:
    """Size, UTF-8 and JSON-depth limits for every HTTP request; ``routes`` maps exact paths to their own rule."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_json_depth: int,
                 routes: Mapping[str, BodyRule] | None = None):
        self.app = app
        self.default = BodyRule(max_bytes)
        self.routes = dict(routes or {})
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.routes.get(scope["path"].rstrip("/") or "/", self.default)
        headers = Headers(scope=scope)
        declared = _content_length(headers)
        if declared is not None and declared > rule.max_bytes:
            await refuse(rule.too_large(), scope, receive, send)
        elif rule.stream or headers.get("content-type", "").lower().startswith(FORM_TYPES):
            await _CappedStream(self.app, rule)(scope, receive, send)
        else:
            await self._checked(scope, receive, send, rule)

    async def _checked(self, scope: Scope, receive: Receive, send: Send, rule: BodyRule) -> None:
        """Read the body (up to the cap), check what a JSON parser would make of it, then replay it to the app."""
        try:
            body = await _read_capped(receive, rule)
            if len(body) > INLINE_SCAN_BYTES:
                await anyio.to_thread.run_sync(check_json_body, body, self.max_json_depth)
            else:
                check_json_body(body, self.max_json_depth)
        except RagError as exc:
            await refuse(exc, scope, receive, send)
            return
        except _ClientGone:
            return
        await self.app(scope, _replay(body, receive), send)


class _CappedStream:
    """Passes the body through as it arrives and cuts it off once it passes the cap: the read fails inside the app,
    whatever the app answers to that is dropped, and the 413 is sent instead."""

    def __init__(self, app: ASGIApp, rule: BodyRule):
        self.app, self.rule = app, rule
        self.seen, self.cut, self.started = 0, False, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def capped_receive() -> Message:
            if self.cut:
                raise _CutOff
            message = await receive()
            if message["type"] == "http.request":
                self.seen += len(message.get("body", b""))
                if self.seen > self.rule.max_bytes:
                    self.cut = True
                    raise _CutOff
            return message

        async def guarded_send(message: Message) -> None:
            if not self.cut:
                self.started = True
                await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not self.cut:
                raise
        if self.cut and not self.started:
            await refuse(self.rule.too_large(), scope, receive, send)


def check_json_body(body: bytes, max_depth: int) -> None:
    """Refuse (422, ``body``) what must not reach a JSON parser: invalid UTF-8, nesting deeper than ``max_depth``."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("body must be UTF-8 encoded JSON", field="body") from None
    if nests_deeper_than(body, max_depth):
        raise InvalidInput(f"body nests deeper than {max_depth} levels of JSON arrays and objects", field="body")


def nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether ``[``/``{`` outside JSON strings nest deeper than ``limit``. Exact for the part of ``body`` a JSON
    parser reads before it fails; strings are cut out by one linear regex pass and the depth is a prefix sum."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = np.frombuffer(_STRING.sub(b"", body).translate(None, _NOT_BRACKET), dtype=np.uint8)
    base = 0
    for start in range(0, len(brackets), _SCAN_CHUNK):
        part = brackets[start:start + _SCAN_CHUNK]
        depth = np.cumsum(np.where((part == ord("[")) | (part == ord("{")), 1, -1), dtype=np.int64) + base
        if int(depth.max()) > limit:
            return True
        base = int(depth[-1])
    return False


async def refuse(exc: RagError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with ``exc``; after a 413 the unread rest of the body makes the connection unusable: close it."""
    response = error_response(exc)
    if isinstance(exc, PayloadTooLarge):
        response.headers["connection"] = "close"
    await response(scope, receive, send)


async def _read_capped(receive: Receive, rule: BodyRule) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > rule.max_bytes:
            raise rule.too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body as one message, then the server's own messages (a later ``http.disconnect``)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _content_length(headers: Headers) -> int | None:
    value = (headers.get("content-length") or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


class _CutOff(Exception):
    """Raised into the app when a streamed body passes the cap."""


class _ClientGone(Exception):
    """The client disconnected before sending the whole body."""

