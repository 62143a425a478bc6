"""One error hierarchy for the whole library.

Every error pickles (it crosses Ray process boundaries) and carries a stable ``code``;
the HTTP router is the only place that maps these to status codes.
"""

from __future__ import annotations

from typing import Any


class RagError(Exception):
    """Base of every error rag-ray raises on purpose."""

    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.field, self.details, self.__dict__))

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body


def _rebuild(cls: type[RagError], message: str, field: str | None, details: dict[str, Any],
             state: dict[str, Any]) -> RagError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    err.message, err.field, err.details = message, field, details
    return err


class InvalidInput(RagError):
    """The caller sent something we will not process (names the offending field)."""

    code = "invalid_input"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"


class DriverUnavailable(InvalidInput):
    """The request names a database type whose driver this server does not have installed (a 4xx: the
    caller can pick another source; retrying will not help)."""

    code = "driver_unavailable"


class NotFound(RagError):
    code = "not_found"


class Conflict(RagError):
    code = "conflict"


class AuthenticationError(RagError):
    code = "unauthenticated"


class PermissionDenied(RagError):
    code = "forbidden"


class ConfigError(RagError):
    code = "config_error"


class SourceError(RagError):
    """A source (file, table) could not be read or parsed."""

    code = "source_error"


class StoreError(RagError):
    """The vector store or metadata DB failed."""

    code = "store_error"


class JobError(RagError):
    code = "job_error"


class Overloaded(RagError):
    """Queues are full; the caller should retry after ``retry_after`` seconds."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ShuttingDown(Overloaded):
    """The server is stopping: it finishes the requests in flight and takes no new ones. Another replica (or this
    server once restarted) will; a load balancer retries a 503 elsewhere."""

    code = "shutting_down"


class RequestTimeout(RagError):
    code = "timeout"


class RateLimited(RagError):
    """The caller went over one of its limits (requests per minute, a token/cost budget, a login lockout). The
    message names the limit; ``retry_after``: seconds until it admits the caller again."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


# ---- provider errors (LLM / embedding backends) ----
class ProviderError(RagError):
    """A model provider failed. ``retriable`` tells the manager whether another try may help."""

    code = "provider_error"
    retriable = False

    def __init__(self, message: str, *, provider: str = "", retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.provider = provider
        self.retry_after = retry_after


class ProviderRateLimited(ProviderError):
    code = "provider_rate_limited"
    retriable = True


class ProviderAuthError(ProviderError):
    code = "provider_auth_error"


class ContextTooLong(ProviderError):
    code = "context_too_long"


class ProviderTimeout(ProviderError):
    code = "provider_timeout"
    retriable = True


class ProviderServerError(ProviderError):
    code = "provider_server_error"
    retriable = True


class ProviderConnectionError(ProviderError):
    code = "provider_connection_error"
    retriable = True


class ProviderBadRequest(ProviderError):
    code = "provider_bad_request"


class ProviderUnavailable(ProviderError):
    """No provider could serve the request (all down or circuit open)."""

    code = "provider_unavailable"
