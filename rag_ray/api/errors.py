"""The one place library errors become HTTP responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from rag_ray import errors as e

STATUS: list[tuple[type[e.RagError], int]] = [  # most specific first
    (e.PayloadTooLarge, 413),
    (e.InvalidInput, 422),
    (e.AuthenticationError, 401),
    (e.PermissionDenied, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.Overloaded, 503),
    (e.RequestTimeout, 504),
    (e.ProviderRateLimited, 429),
    (e.ProviderTimeout, 504),
    (e.ContextTooLong, 422),
    (e.ProviderBadRequest, 422),
    (e.ProviderUnavailable, 503),
    (e.ProviderError, 502),
    (e.ConfigError, 500),
    (e.StoreError, 503),
    (e.SourceError, 422),
    (e.JobError, 409),
]


def status_for(exc: e.RagError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(exc: e.RagError) -> JSONResponse:
    status = status_for(exc)
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if status in (429, 503) and retry_after is not None:
        headers["Retry-After"] = str(max(1, round(float(retry_after))))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(exc.to_dict(), status_code=status, headers=headers)


def _validation_response(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]  # the request part, not a field name (a body field may itself be called "query")
        problems.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    body = {"error": "invalid_input", "message": f"{first['field']}: {first['message']}", "field": first["field"],
            "details": {"errors": problems}}
    return JSONResponse(body, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.RagError, lambda _req, exc: error_response(exc))
    app.add_exception_handler(RequestValidationError, _validation_response)  # type: ignore[arg-type]
