"""`/auth/token`, `/auth/refresh`, `/auth/logout`, `/auth/me`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag_ray.api.deps import PrincipalDep, ServicesDep, bearer_token
from rag_ray.errors import InvalidInput

router = APIRouter(prefix="/auth", tags=["auth"])

_LOGIN_BODY = {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["username", "password"], "properties": {
        "username": {"type": "string"}, "password": {"type": "string", "format": "password"}}}},
    "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["username", "password"],
                                                     "properties": {"grant_type": {"type": "string"},
                                                                    "username": {"type": "string"},
                                                                    "password": {"type": "string"}}}}}}


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)
    grant_type: str | None = Field(None, pattern="^password$")


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=8192)


class LogoutRequest(BaseModel):
    refresh_token: str | None = Field(None, max_length=8192)




async def _body_fields(request: Request) -> dict[str, Any]:
    """JSON or form fields (OAuth2 password flow clients post a form)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}
    raw = await request.body()
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise InvalidInput("body must be JSON or a form", field="body") from None
    if not isinstance(data, dict):
        raise InvalidInput("body must be a JSON object", field="body")
    return data


def _validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidInput(f"{field}: {first.get('msg', 'invalid')}", field=field) from None


@router.post("/token", summary="Username + password (JSON or OAuth2 form) → access and refresh tokens (no auth)",
             openapi_extra={"requestBody": _LOGIN_BODY})
async def token(request: Request, services: ServicesDep) -> dict[str, Any]:
    body: LoginRequest = _validate(LoginRequest, await _body_fields(request))
    pair = await asyncio.to_thread(services.accounts.login, body.username, body.password)
    return pair.to_dict()


@router.post("/refresh", summary="A refresh token → a new token pair (the old refresh token is used up)")
async def refresh(body: RefreshRequest, services: ServicesDep) -> dict[str, Any]:
    pair = await asyncio.to_thread(services.accounts.refresh, body.refresh_token)
    return pair.to_dict()


@router.post("/logout", summary="Revoke the presented token (and a refresh token given in the body)")
async def logout(request: Request, _: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    body: LogoutRequest = _validate(LogoutRequest, await _body_fields(request))
    service = services.accounts
    await asyncio.to_thread(service.revoke, bearer_token(request))
    if body.refresh_token:
        await asyncio.to_thread(service.revoke, body.refresh_token)
    return {"revoked": True}


@router.get("/me", summary="Who the bearer token belongs to")
async def me(principal: PrincipalDep) -> dict[str, Any]:
    return {"user_id": principal.user_id, "username": principal.username, "role": principal.role,
            "group_ids": list(principal.group_ids), "is_admin": principal.is_admin}
