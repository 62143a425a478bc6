"""Shared mapping from HTTP-ish failures to ``rag_ray.errors`` provider errors.

Each provider module extracts (status, message, headers) from its SDK's exception and calls
``error_for_status``; transport failures go through ``error_for_transport``. One table, no per-provider
if/elif chains.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from rag_ray.errors import (
    ContextTooLong,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimited,
    ProviderServerError,
    ProviderTimeout,
)

_BY_STATUS: dict[int, type[ProviderError]] = {
    400: ProviderBadRequest, 401: ProviderAuthError, 403: ProviderAuthError, 404: ProviderBadRequest,
    408: ProviderTimeout, 409: ProviderServerError, 413: ContextTooLong, 422: ProviderBadRequest,
    429: ProviderRateLimited, 504: ProviderTimeout,
}

# Wording providers use for "prompt does not fit the context window" (codes or messages).
_CONTEXT_PATTERN = re.compile(r"context[_ ]length|context window|prompt is too long|too many tokens|"
                              r"maximum context|input token count|exceeds the context", re.IGNORECASE)


def parse_retry_after(headers: Mapping[str, str] | Any | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _header(headers: Any, name: str) -> str | None:
    try:
        value = headers.get(name)
    except AttributeError:
        return None
    return None if value is None else str(value)


def is_context_error(*texts: object) -> bool:
    return any(text is not None and _CONTEXT_PATTERN.search(str(text)) for text in texts)


def error_for_status(status: int, message: str, *, provider: str, headers: Any = None,
                     code: object = None) -> ProviderError:
    """The provider error for an HTTP status (+ body code/message for context-window errors)."""
    if status in (400, 413, 422) and is_context_error(code, message):
        cls: type[ProviderError] = ContextTooLong
    elif status >= 500:
        cls = _BY_STATUS.get(status, ProviderServerError)
    else:
        cls = _BY_STATUS.get(status, ProviderBadRequest)
    retry_after = parse_retry_after(headers)
    return cls(f"{provider}: HTTP {status}: {message}"[:2000], provider=provider, retry_after=retry_after,
               details={"status": status})


def error_for_transport(exc: BaseException, *, provider: str) -> ProviderError:
    """A connection-level failure (no HTTP status): timeouts are told apart by class name, which every
    HTTP stack (httpx, httpx2, aiohttp, asyncio) spells with 'Timeout'."""
    names = " ".join(cls.__name__ for cls in type(exc).__mro__)
    cls = ProviderTimeout if "Timeout" in names else ProviderConnectionError
    return cls(f"{provider}: {type(exc).__name__}: {exc}"[:2000], provider=provider)


def is_transport_error(exc: BaseException) -> bool:
    """httpx/httpx2 transport errors, aiohttp client errors, SDK connection/timeout errors, OS errors."""
    if isinstance(exc, OSError | TimeoutError | ConnectionError | EOFError):
        return True
    if type(exc).__module__.split(".")[0] in {"httpx", "httpx2", "httpcore", "aiohttp", "h11"}:
        return True
    names = " ".join(cls.__name__ for cls in type(exc).__mro__)
    return "ConnectionError" in names or "Timeout" in names


StatusInfo = tuple[int, str, Any, object]  # (status, message, headers, body error code)


def translate(exc: BaseException, *, provider: str, status_of: Callable[[BaseException], StatusInfo | None]
              ) -> BaseException:
    """Map an SDK exception to a provider error; anything unrecognised is returned unchanged."""
    if isinstance(exc, ProviderError):
        return exc
    info = status_of(exc)
    if info is not None:
        status, message, headers, code = info
        return error_for_status(status, message, provider=provider, headers=headers, code=code)
    if is_transport_error(exc):
        return error_for_transport(exc, provider=provider)
    return exc


def stream_ended_early(provider: str) -> ProviderConnectionError:
    return ProviderConnectionError(f"{provider}: stream ended before the final chunk", provider=provider,
                                   details={"stream_interrupted": True})


def finish_reason(raw: object, table: Mapping[str, str]) -> str:
    """Normalise a provider's stop reason to 'stop' / 'length' / …; unknown ones pass through lowercased."""
    name = getattr(raw, "name", None) or str(raw or "stop")
    return table.get(name.lower(), name.lower())
