"""Guardrails on every route, added where routers are included (``include_guarded`` in ``create_app``), so no route
module has to remember them:

1. ``bind_client`` (first, before authentication): binds the audit actor with the client address and request id,
   so API-key and refresh-token failures count against the address (``rag_ray.access.lockout``).
2. Authenticated routes (``GuardCaller``, which reuses the route's own ``current_principal`` result): binds the
   caller (user, API key, groups, route class) for LLM metering, charges the requests-per-period limits of the
   route's class, refuses an LLM route at once when a token/cost budget is spent, audits admin reads of others'
   documents and non-admins knocking on admin routes.
3. Anonymous routes (``GuardAnonymous``): ``/auth/token`` and ``/auth/refresh`` are throttled per client address
   (``RAG_AUTH_RPM_PER_ADDRESS``).

Route classes come from the path: ``ROUTE_CLASS_PREFIXES`` (the longest matching prefix wins, else ``other``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import select
from starlette.routing import BaseRoute

from rag_ray.access.users import API_KEY_PREFIX
from rag_ray.api.deps import PrincipalDep, ServicesDep, admin_principal, current_principal
from rag_ray.api.services import Services
from rag_ray.audit import DENIED, Actor, bind_actor
from rag_ray.guard.context import Caller, bind_caller
from rag_ray.metadata.models import DocumentRecord
from rag_ray.observability.context import REQUEST_ID_HEADER, current_request_id, valid_request_id
from rag_ray.types import Principal

ROUTE_CLASS_PREFIXES: dict[str, str] = {
    "/auth": "auth",
    "/admin": "admin", "/metrics": "admin",
    "/chat": "llm", "/generate": "llm", "/v1/chat": "llm", "/v1/completions": "llm",
    "/query": "retrieval", "/embeddings": "retrieval", "/v1/embeddings": "retrieval", "/v1/models": "retrieval",
    "/extract": "ingest", "/documents/upload": "ingest", "/jobs": "ingest",
}
LIMITS_ROUTE = "/admin/limits"  # where limits are managed: see _manages_limits
THROTTLED_ANONYMOUS = frozenset({"auth"})  # anonymous route classes limited per client address
# admin reads of others' documents: (method, route path) → audit action
ADMIN_READS = {("GET", "/documents/{doc_id}"): "document.read", ("GET", "/documents"): "document.list"}


def route_class(path: str) -> str:
    matches = [p for p in ROUTE_CLASS_PREFIXES if path == p or path.startswith(p.rstrip("/") + "/")]
    return ROUTE_CLASS_PREFIXES[max(matches, key=len)] if matches else "other"


def client_address(request: Request) -> str | None:
    """The peer address (behind a proxy: what uvicorn's ``--forwarded-allow-ips`` made of X-Forwarded-For)."""
    return request.client.host[:64] if request.client and request.client.host else None


def _request_id(request: Request) -> str | None:
    header = request.headers.get(REQUEST_ID_HEADER)
    return current_request_id() or (header if valid_request_id(header) else None)


async def bind_client(request: Request) -> None:
    bind_actor(Actor(address=client_address(request), request_id=_request_id(request)))


class GuardCaller:
    """The guard of one authenticated route (one instance per route class and admin flag)."""

    def __init__(self, route_class: str, admin_only: bool):
        self.route_class = route_class
        self.admin_only = admin_only

    async def __call__(self, request: Request, principal: PrincipalDep, services: ServicesDep) -> None:
        bearer = bearer_of(request)
        key_id = await asyncio.to_thread(services.guard.key_id, bearer) if bearer.startswith(API_KEY_PREFIX) else None
        bind_actor(Actor(principal.user_id, principal.username, client_address(request), _request_id(request)))
        caller = Caller(principal, key_id, self.route_class)
        bind_caller(caller)
        if self.admin_only and not principal.is_admin:
            await asyncio.to_thread(services.audit.record, "access.denied", target_type="route",
                                    target_id=_route_path(request), outcome=DENIED,
                                    details={"method": request.method})
            return  # the route's admin dependency answers 403; a refused request is not charged
        if not services.guard.limits.known_empty() and not _manages_limits(principal, request):
            await asyncio.to_thread(services.guard.check_request, caller)
            if self.route_class == "llm":
                await asyncio.to_thread(services.guard.check_budget, caller)
        action = ADMIN_READS.get((request.method, _route_path(request)))
        if action and principal.is_admin:
            await asyncio.to_thread(audit_admin_read, services, principal, action, request)


def _manages_limits(principal: Principal, request: Request) -> bool:
    """An admin's calls to ``/admin/limits`` are never refused by a request limit: a rule set too tight (every user
    at 0 requests a minute on all routes, say) can always be lifted over the API that set it."""
    return principal.is_admin and _route_path(request).startswith(LIMITS_ROUTE)


class GuardAnonymous:
    def __init__(self, route_class: str):
        self.route_class = route_class

    async def __call__(self, request: Request, services: ServicesDep) -> None:
        if self.route_class in THROTTLED_ANONYMOUS:
            await asyncio.to_thread(services.guard.check_address, client_address(request),
                                    services.settings.auth_rpm_per_address, self.route_class)


def audit_admin_read(services: Services, principal: Principal, action: str, request: Request) -> None:
    doc_id = request.path_params.get("doc_id")
    if doc_id is None:  # the list: every user's documents
        services.audit.record(action, target_type="documents", target_id="*", details=dict(request.query_params))
        return
    with services.db.session() as s:
        owner = s.scalar(select(DocumentRecord.owner_id).where(DocumentRecord.doc_id == doc_id))
    if owner is not None and owner != principal.user_id:
        services.audit.record(action, target_type="document", target_id=doc_id, details={"owner_id": owner})


def bearer_of(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


def _calls(dependant: Dependant) -> set[Any]:
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found


@dataclass(frozen=True)
class _Placed:
    """A route of a router tree with what the routers it sits in add to it."""

    route: BaseRoute | None
    prefix: str = ""
    dependencies: tuple[Any, ...] = ()
    tags: tuple[Any, ...] = ()


def _placed(router: APIRouter, outer: _Placed | None = None) -> Iterator[_Placed]:
    """Every route of ``router``, nested routers included (FastAPI keeps an included router whole, with the prefix,
    dependencies and tags of its inclusion, instead of copying its routes)."""
    outer = outer or _Placed(None)
    for route in router.routes:
        nested, context = getattr(route, "original_router", None), getattr(route, "include_context", None)
        if nested is not None and context is not None:
            yield from _placed(nested, _Placed(None, outer.prefix + context.prefix,
                                               (*outer.dependencies, *context.dependencies),
                                               (*outer.tags, *context.tags)))
        else:
            yield _Placed(route, outer.prefix, outer.dependencies, outer.tags)


def include_guarded(app: FastAPI, router: APIRouter) -> None:
    """Include ``router``'s routes one by one (their order kept) with the guard dependencies that fit each."""
    for placed in _placed(router):
        if placed.route is None:
            continue
        part = APIRouter()
        part.routes.append(placed.route)
        options: dict[str, Any] = {"prefix": placed.prefix, "tags": list(placed.tags)}
        if not isinstance(placed.route, APIRoute):
            app.include_router(part, **options)
            continue
        calls = _calls(placed.route.dependant) | {d.dependency for d in placed.dependencies}
        klass = route_class(placed.prefix + placed.route.path)
        admin_only = admin_principal in calls
        guard: Any = GuardCaller(klass, admin_only) if admin_only or current_principal in calls \
            else GuardAnonymous(klass)
        app.include_router(part, dependencies=[Depends(bind_client), Depends(guard), *placed.dependencies],
                           **options)
