"""FastAPI dependencies: the services container from app state, the authenticated caller.

Routes declare what they need with the ``Annotated`` aliases::

    async def route(body: Body, services: ServicesDep, principal: PrincipalDep) -> ...
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from rag_ray.api.services import Services
from rag_ray.errors import AuthenticationError, PermissionDenied
from rag_ray.types import Principal


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("missing bearer token (Authorization: Bearer <token>)", field="Authorization")
    return token.strip()


def current_principal(request: Request, services: ServicesDep) -> Principal:
    principal = services.auth.authenticate(bearer_token(request))
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def admin_principal(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise PermissionDenied("this endpoint needs the admin role")
    return principal


AdminDep = Annotated[Principal, Depends(admin_principal)]
