"""Admin API of the guardrails: limits and budgets (``/admin/limits``), LLM usage (``/admin/usage``), the audit log
(``/admin/audit``, read-only: there is no route that changes or deletes an entry) and login lockouts
(``/admin/lockouts``, ``POST /admin/users/{user_ref}/unlock``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from rag_ray.api.deps import AdminDep, ServicesDep
from rag_ray.guard.context import ALL, ROUTE_CLASSES
from rag_ray.guard.counters import PERIODS

router = APIRouter(prefix="/admin", tags=["admin"])

SubjectKind = Literal["user", "key", "group"]
Metric = Literal["requests", "tokens", "cost_usd"]


class SetLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"subject_kind": "user", "subject": "alice", "metric": "requests", "route_class": "llm", "period": "minute",
         "limit": 20},
        {"subject_kind": "group", "subject": "eng", "metric": "cost_usd", "period": "month", "limit": 50.0},
        {"subject_kind": "user", "subject": "*", "metric": "tokens", "period": "day", "limit": 200000}]})

    subject_kind: SubjectKind
    subject: str = Field(min_length=1, max_length=128,
                         description="user id or username, API key id, group id or name; * for each one without "
                                     "a limit of its own")
    metric: Metric
    route_class: str = Field(ALL, description=f"requests: one of {', '.join((*ROUTE_CLASSES, ALL))}; budgets: all")
    period: str = Field(description=f"one of {', '.join(PERIODS)} (day and month: UTC)")
    limit: float = Field(ge=0, le=1e12, description="requests, tokens, or USD")


@router.put("/limits", summary="Set a limit or budget (replaces the amount of the same subject/metric/class/period)")
def set_limit(body: SetLimit, principal: AdminDep, services: ServicesDep) -> dict[str, Any]:
    rule = services.guard.set_limit(body.subject_kind, body.subject, body.metric, body.period, body.limit,
                                    route_class=body.route_class, updated_by=principal.user_id)
    return rule.to_dict()


@router.get("/limits", summary="List limits and budgets")
def list_limits(_: AdminDep, services: ServicesDep, subject_kind: SubjectKind | None = None,
                subject: str | None = Query(None, max_length=128), metric: Metric | None = None) -> dict[str, Any]:
    subject_id = subject
    if subject_kind and subject and subject != "*":
        subject_id = services.guard.resolve_subject(subject_kind, subject)
    rules = services.guard.limits.rules(subject_kind=subject_kind, subject_id=subject_id, metric=metric)
    return {"limits": [r.to_dict() for r in rules], "count": len(rules)}


@router.delete("/limits/{limit_id}", summary="Remove a limit or budget")
def delete_limit(limit_id: str, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    return {**services.guard.limits.delete(limit_id).to_dict(), "deleted": True}


@router.get("/usage", summary="LLM usage (calls, tokens, cost) per user, API key, provider and model")
def usage(_: AdminDep, services: ServicesDep, since: datetime | None = None, until: datetime | None = None,
          group_by: str = Query("user,key,provider,model", max_length=128,
                                description="comma separated: user, key, provider, model, route_class"),
          user: str | None = Query(None, max_length=128, description="user id or username"),
          key: str | None = Query(None, max_length=64), provider: str | None = Query(None, max_length=64),
          model: str | None = Query(None, max_length=255)) -> dict[str, Any]:
    user_id = services.guard.resolve_subject("user", user) if user else None
    dims = [d.strip() for d in group_by.split(",") if d.strip()]
    rows = services.guard.usage.report(since=since, until=until, group_by=dims, user_id=user_id, key_id=key,
                                       provider=provider, model=model)
    totals = {k: sum(r[k] for r in rows) for k in ("calls", "prompt_tokens", "completion_tokens", "total_tokens",
                                                   "cost_usd")}
    return {"usage": rows, "totals": totals, "group_by": dims}


@router.get("/audit", summary="The audit log, newest first (read-only)")
def audit(_: AdminDep, services: ServicesDep, actor: str | None = Query(None, max_length=128),
          action: str | None = Query(None, max_length=64, description="exact, or a prefix ending in '.' (user.)"),
          target: str | None = Query(None, max_length=255), outcome: str | None = Query(None, max_length=16),
          since: datetime | None = None, until: datetime | None = None, limit: int = Query(100, ge=1, le=1000),
          before_id: int | None = Query(None, ge=1, description="the next page: the last id of this one")
          ) -> dict[str, Any]:
    entries = services.audit.list(actor=actor, action=action, target=target, outcome=outcome, since=since,
                                  until=until, limit=limit, before_id=before_id)
    return {"events": [e.to_dict() for e in entries], "count": len(entries),
            "next_before_id": entries[-1].id if len(entries) == limit else None}


@router.get("/lockouts", summary="Usernames and client addresses locked out now")
def lockouts(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    locks = services.accounts.lockout.locks()
    return {"lockouts": [lock.to_dict() for lock in locks], "count": len(locks)}


@router.post("/users/{user_ref}/unlock", summary="Lift a user's login lockout")
def unlock(user_ref: str, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    return services.accounts.unlock(user_ref)
