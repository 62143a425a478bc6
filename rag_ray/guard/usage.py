"""LLM usage per call (``usage_records``) and the report over it: per user, API key, provider and model."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, func, insert, select

from rag_ray.errors import InvalidInput
from rag_ray.guard.context import Caller
from rag_ray.guard.limits import MICROS
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import UsageRecord, User
from rag_ray.observability.context import current_request_id

Clock = Callable[[], float]
USAGE: Table = UsageRecord.__table__  # type: ignore[assignment]
DIMENSIONS: dict[str, ColumnElement[Any]] = {
    "user": UsageRecord.user_id, "key": UsageRecord.key_id, "provider": UsageRecord.provider,  # type: ignore[dict-item]
    "model": UsageRecord.model, "route_class": UsageRecord.route_class}  # type: ignore[dict-item]


class UsageLog:
    def __init__(self, db: MetadataDB, clock: Clock = time.time):
        self.db = db
        self.clock = clock

    def record(self, caller: Caller, *, provider: str, model: str, prompt_tokens: int, completion_tokens: int,
               cost_micros: int) -> None:
        row = {"at": datetime.fromtimestamp(self.clock(), UTC), "user_id": caller.principal.user_id,
               "key_id": caller.key_id, "route_class": caller.route_class, "provider": provider[:64],
               "model": model[:255], "prompt_tokens": max(0, prompt_tokens),
               "completion_tokens": max(0, completion_tokens), "cost_micros": max(0, cost_micros),
               "request_id": current_request_id()}
        with self.db.session() as s:
            s.execute(insert(USAGE), [row])

    def report(self, *, since: datetime | None = None, until: datetime | None = None,
               group_by: Sequence[str] = ("user", "key", "provider", "model"), user_id: str | None = None,
               key_id: str | None = None, provider: str | None = None, model: str | None = None
               ) -> list[dict[str, Any]]:
        """One row per combination of ``group_by`` (``user``, ``key``, ``provider``, ``model``, ``route_class``):
        calls, prompt/completion/total tokens and cost in USD, in [``since``, ``until``), largest cost first."""
        unknown = [d for d in group_by if d not in DIMENSIONS]
        if unknown:
            raise InvalidInput(f"group_by takes {', '.join(DIMENSIONS)}; not {', '.join(unknown)}", field="group_by")
        dims = list(dict.fromkeys(group_by))
        columns = [DIMENSIONS[d].label(d) for d in dims]
        totals = [func.count().label("calls"), func.sum(UsageRecord.prompt_tokens).label("prompt_tokens"),
                  func.sum(UsageRecord.completion_tokens).label("completion_tokens"),
                  func.sum(UsageRecord.cost_micros).label("cost_micros")]
        query = select(*columns, *totals).group_by(*[DIMENSIONS[d] for d in dims])
        for column, value in ((UsageRecord.user_id, user_id), (UsageRecord.key_id, key_id),
                              (UsageRecord.provider, provider), (UsageRecord.model, model)):
            if value:
                query = query.where(column == value)
        if since is not None:
            query = query.where(UsageRecord.at >= _utc(since))
        if until is not None:
            query = query.where(UsageRecord.at < _utc(until))
        with self.db.session() as s:
            rows = [dict(r._mapping) for r in s.execute(query)]
            names = {uid: name for uid, name in s.execute(select(User.user_id, User.username))} if "user" in dims \
                else {}
        return sorted((_report_row(r, names) for r in rows), key=lambda r: (-r["cost_usd"], -r["total_tokens"]))


def _report_row(row: dict[str, Any], usernames: dict[str, str]) -> dict[str, Any]:
    totals = ("calls", "prompt_tokens", "completion_tokens", "cost_micros")
    prompt, completion = int(row["prompt_tokens"] or 0), int(row["completion_tokens"] or 0)
    out = {k: v for k, v in row.items() if k not in totals}
    out.update(calls=int(row["calls"]), prompt_tokens=prompt, completion_tokens=completion,
               total_tokens=prompt + completion, cost_usd=int(row["cost_micros"] or 0) / MICROS)
    if "user" in out:
        out["username"] = usernames.get(out["user"])
    return out


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
