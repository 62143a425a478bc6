"""FastAPI dependencies: services from app state, the authenticated caller."""

from __future__ import annotations

from fastapi import Depends, Request

from rag_ray.api.services import Services
from rag_ray.errors import AuthenticationError, PermissionDenied
from rag_ray.types import Principal


def get_services(request: Request) -> Services:
    return request.app.state.services


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("missing bearer token (Authorization: Bearer <token>)", field="Authorization")
    return token.strip()


def current_principal(request: Request, services: Services = Depends(get_services)) -> Principal:
    principal = services.auth.authenticate(bearer_token(request))
    request.state.principal = principal
    return principal


def admin_principal(principal: Principal = Depends(current_principal)) -> Principal:
    if not principal.is_admin:
        raise PermissionDenied("this endpoint needs the admin role")
    return principal
