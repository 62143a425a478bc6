"""The one place library errors become HTTP responses."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from rag_ray import errors as e
from rag_ray.observability.context import current_request_id

log = logging.getLogger(__name__)

STATUS: list[tuple[type[e.RagError], int]] = [  # most specific first
    (e.PayloadTooLarge, 413),
    (e.InvalidInput, 422),
    (e.AuthenticationError, 401),
    (e.PermissionDenied, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.Overloaded, 503),
    (e.RateLimited, 429),
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
    if status >= 500 and not isinstance(exc, e.StoreError | e.Overloaded):  # store errors log themselves
        log.error("%d %s: %s", status, exc.code, exc.message)  # a provider's answer, a misconfiguration
    return JSONResponse(with_request_id(public_error(exc).to_dict()), status_code=status, headers=headers)


def with_request_id(body: dict[str, Any]) -> dict[str, Any]:
    """An error body with the request id in its details (quote it to find the request's log lines)."""
    request_id = current_request_id()
    if request_id:
        body["details"] = {**(body.get("details") or {}), "request_id": request_id}
    return body


def public_error(exc: e.RagError) -> e.RagError:
    """What a client may see of ``exc``. A store error's message can hold a filter expression (the caller's
    access rules) or driver text: it is logged here, and the client gets a generic message and its reference."""
    if not isinstance(exc, e.StoreError):
        return exc
    ref = str(exc.details.get("error_id") or "")
    if not ref:  # not logged where it was raised (rag_ray.store.milvus logs its own)
        ref = _reference()
        log.error("store error [%s]: %s", ref, exc.message)
    return e.StoreError(f"the data store failed; the server log has the details (reference {ref})",
                        details={"error_id": ref})


def _reference() -> str:
    return uuid.uuid4().hex[:12]


def unexpected_response(_: Request, exc: Exception) -> JSONResponse:
    """Anything not raised on purpose: logged with its traceback; the client sees only a reference."""
    ref = _reference()
    log.error("unexpected error [%s]", ref, exc_info=exc)
    body: dict[str, Any] = {"error": "internal_error", "message": f"internal error (reference {ref})",
                            "details": {"error_id": ref}}
    return JSONResponse(with_request_id(body), status_code=500)


def _validation_response(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = validation_problems(exc)
    first = problems[0]
    body = {"error": "invalid_input", "message": f"{first['field']}: {first['message']}", "field": first["field"],
            "details": {"errors": problems}}
    return JSONResponse(with_request_id(body), status_code=422)


def validation_problems(exc: RequestValidationError) -> list[dict[str, str]]:
    """The request's problems as ``{field, message}``, at least one: ours and the ``/v1`` routes' answers name the
    first."""
    return [_problem(err) for err in exc.errors()] or [{"field": "body", "message": "invalid request"}]


def _problem(err: dict[str, Any]) -> dict[str, str]:
    """One of pydantic's errors: the field's dotted path, or ``body`` for the body itself."""
    loc = [str(p) for p in err.get("loc", ())]
    if err.get("type") == "json_invalid":  # its loc is ("body", <character offset>), not a field
        position = f" at character {loc[1]}" if len(loc) > 1 else ""
        return {"field": "body", "message": f"invalid JSON{position}: {err.get('ctx', {}).get('error', 'malformed')}"}
    if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
        loc = loc[1:]  # the request part, not a field name (a body field may itself be called "query")
    return {"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.RagError, lambda _req, exc: error_response(exc))
    app.add_exception_handler(RequestValidationError, _validation_response)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected_response)
