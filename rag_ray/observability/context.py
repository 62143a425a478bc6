"""What every log line and outgoing call of one request (or job) carries: its request id, its job id.

The ids live in ``contextvars``: set once by the HTTP middleware (``rag_ray.api.middleware``) or by the job runner,
they follow the request through ``await``, ``asyncio.to_thread`` and tasks it creates, and are read by the logging
filter (``rag_ray.observability.logs``) and by the provider SDK adapters (``outgoing_headers``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, TypeVar

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is kept when it is short and made of safe characters (it is echoed in headers and logs);
# anything else is replaced by a generated one.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}")

request_id_var: ContextVar[str | None] = ContextVar("rag_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("rag_job_id", default=None)
# secrets this request carries (its bearer token / API key): masked in every log line written while it runs
request_secrets_var: ContextVar[tuple[str, ...]] = ContextVar("rag_request_secrets", default=())


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(value: str | None) -> bool:
    return bool(value) and _SAFE_ID.fullmatch(value or "") is not None


def accept_request_id(value: str | None) -> str:
    """The caller's id when it is safe to echo, else a new one."""
    return value if value is not None and valid_request_id(value) else new_request_id()


def current_request_id() -> str | None:
    return request_id_var.get()


def current_job_id() -> str | None:
    return job_id_var.get()


@contextmanager
def log_context(*, request_id: str | None = None, job_id: str | None = None,
                secrets: Iterable[str] = ()) -> Iterator[None]:
    """Bind ids (and request-scoped secrets to mask) for the code inside; unset values keep the outer ones."""
    tokens: list[tuple[ContextVar[Any], Token[Any]]] = []
    if request_id is not None:
        tokens.append((request_id_var, request_id_var.set(request_id)))
    if job_id is not None:
        tokens.append((job_id_var, job_id_var.set(job_id)))
    extra = tuple(s for s in secrets if s)
    if extra:
        tokens.append((request_secrets_var, request_secrets_var.set(request_secrets_var.get() + extra)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


V = TypeVar("V")


@contextmanager
def bound(var: ContextVar[V | None], value: V) -> Iterator[V]:
    """``var`` set to ``value`` for the code inside, restored after (the request-scoped binding every context uses)."""
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)


def outgoing_headers() -> dict[str, str]:
    """Headers an outgoing provider call sends so the provider's logs can be matched with ours."""
    request_id = request_id_var.get()
    return {REQUEST_ID_HEADER: request_id} if request_id else {}
