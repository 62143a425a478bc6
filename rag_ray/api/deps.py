"""FastAPI dependencies: the services container from app state, the authenticated caller.

Routes declare what they need with the ``Annotated`` aliases::

    async def route(body: Body, services: ServicesDep, principal: PrincipalDep) -> ...
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request

from rag_ray.api.services import Services
from rag_ray.errors import AuthenticationError, PermissionDenied
from rag_ray.types import Principal


async def get_services(request: Request) -> Services:  # async: a sync dependency costs a thread-pool hop
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("missing bearer token (Authorization: Bearer <token>)", field="Authorization")
    return token.strip()


async def current_principal(request: Request, services: ServicesDep) -> Principal:
    """The caller: from the auth cache on the event loop, else verified against the DB on a worker thread."""
    token = bearer_token(request)
    principal = services.auth.known(token)
    if principal is None:
        principal = await asyncio.to_thread(services.auth.authenticate, token)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def admin_principal(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise PermissionDenied("this endpoint needs the admin role")
    return principal


AdminDep = Annotated[Principal, Depends(admin_principal)]
