"""Limit rules: who (a user, an API key, a group; ``*``: each one without a rule of its own), what (requests of a
route class, LLM tokens, LLM cost in USD) and how much per period (minute, hour, UTC day, UTC month).

Rules live in the metadata DB (``guard_limits``); each replica keeps them for ``RAG_LIMITS_CACHE_S`` seconds, so a
change made on one replica reaches the others within that time (at once on the replica that made it).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from rag_ray.errors import InvalidInput, NotFound
from rag_ray.guard.context import ALL, ROUTE_CLASSES, Caller
from rag_ray.guard.counters import PERIODS
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import LimitRecord

SUBJECT_KINDS = ("user", "key", "group")
METRICS = ("requests", "tokens", "cost_usd")
BUDGET_METRICS = ("tokens", "cost_usd")  # charged by LLM calls, whatever route made them
WILDCARD = "*"
MICROS = 1_000_000  # cost is counted in micro-USD (exact integer arithmetic)
Clock = Callable[[], float]


@dataclass(frozen=True)
class LimitRule:
    limit_id: str
    subject_kind: str
    subject_id: str
    metric: str
    route_class: str
    period: str
    amount: int  # requests, tokens, or micro-USD
    updated_by: str = ""
    updated_at: datetime | None = None

    @property
    def rule_key(self) -> tuple[str, str, str]:
        return self.metric, self.route_class, self.period

    @property
    def value(self) -> float:
        """The limit in its public unit (USD for cost)."""
        return self.amount / MICROS if self.metric == "cost_usd" else self.amount

    def counter_key(self, subject_id: str) -> str:
        return f"{self.subject_kind}:{subject_id}|{self.metric}|{self.route_class}|{self.period}"

    def describe(self, subject_id: str, subject_name: str | None = None) -> str:
        """The limit in words, as the 429 message names it."""
        who = f"{_KIND_WORDS[self.subject_kind]} {subject_name or subject_id}"
        period = "UTC day" if self.period == "day" else "UTC month" if self.period == "month" else self.period
        if self.metric == "requests":
            routes = "all routes" if self.route_class == ALL else f"{self.route_class} routes"
            return f"{self.amount} requests per {period} on {routes} for {who} (limit {self.limit_id})"
        if self.metric == "tokens":
            return f"token budget of {self.amount} LLM tokens per {period} for {who} (limit {self.limit_id})"
        return f"cost budget of ${self.value:g} per {period} for {who} (limit {self.limit_id})"

    def to_dict(self) -> dict[str, Any]:
        return {"limit_id": self.limit_id, "subject_kind": self.subject_kind, "subject_id": self.subject_id,
                "metric": self.metric, "route_class": self.route_class, "period": self.period, "limit": self.value,
                "updated_by": self.updated_by,
                "updated_at": self.updated_at.isoformat() if self.updated_at else None}


_KIND_WORDS = {"user": "user", "key": "API key", "group": "group"}


def check_rule(subject_kind: str, subject_id: str, metric: str, route_class: str, period: str, limit: float) -> int:
    """Validate a rule's fields (errors name the field); returns the amount in counting units."""
    if subject_kind not in SUBJECT_KINDS:
        raise InvalidInput(f"subject_kind must be one of {', '.join(SUBJECT_KINDS)}", field="subject_kind")
    if not subject_id or len(subject_id) > 128:
        raise InvalidInput("subject_id must be 1-128 characters (an id, a name, or * for every one)",
                           field="subject_id")
    if metric not in METRICS:
        raise InvalidInput(f"metric must be one of {', '.join(METRICS)}", field="metric")
    if metric in BUDGET_METRICS and route_class != ALL:
        raise InvalidInput(f"{metric} budgets count every LLM call, whatever the route: route_class must be "
                           f"{ALL!r}", field="route_class")
    if route_class not in (*ROUTE_CLASSES, ALL):
        raise InvalidInput(f"route_class must be one of {', '.join((*ROUTE_CLASSES, ALL))}", field="route_class")
    if period not in PERIODS:
        raise InvalidInput(f"period must be one of {', '.join(PERIODS)}", field="period")
    if not 0 <= limit <= 1e12:
        raise InvalidInput("limit must be between 0 and 1e12", field="limit")
    amount = round(limit * MICROS) if metric == "cost_usd" else int(limit)
    if metric != "cost_usd" and amount != limit:
        raise InvalidInput(f"a {metric} limit is a whole number", field="limit")
    return amount


def _rule(record: LimitRecord) -> LimitRule:
    updated = record.updated_at
    if updated is not None and updated.tzinfo is None:
        updated = updated.replace(tzinfo=UTC)
    return LimitRule(record.limit_id, record.subject_kind, record.subject_id, record.metric, record.route_class,
                     record.period, int(record.amount), record.updated_by, updated)


class LimitStore:
    def __init__(self, db: MetadataDB, *, cache_s: float = 5.0, clock: Clock = time.monotonic):
        self.db = db
        self.cache_s = cache_s
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[tuple[str, str], list[LimitRule]]] | None = None

    # ---- administration ----
    def set(self, subject_kind: str, subject_id: str, metric: str, period: str, limit: float, *,
            route_class: str = ALL, updated_by: str = "") -> LimitRule:
        """Create the rule, or change the amount of the existing one for the same subject, metric, class, period."""
        amount = check_rule(subject_kind, subject_id, metric, route_class, period, limit)
        with self.db.session() as s:
            record = s.scalar(select(LimitRecord).where(
                LimitRecord.subject_kind == subject_kind, LimitRecord.subject_id == subject_id,
                LimitRecord.metric == metric, LimitRecord.route_class == route_class, LimitRecord.period == period))
            if record is None:
                record = LimitRecord(limit_id="lim_" + uuid.uuid4().hex[:16], subject_kind=subject_kind,
                                     subject_id=subject_id, metric=metric, route_class=route_class, period=period)
                s.add(record)
            record.amount, record.updated_by = amount, updated_by[:128]
            s.flush()
            rule = _rule(record)
        self.invalidate()
        return rule

    def delete(self, limit_id: str) -> LimitRule:
        with self.db.session() as s:
            record = s.get(LimitRecord, limit_id)
            if record is None:
                raise NotFound(f"no limit {limit_id!r}", field="limit_id")
            rule = _rule(record)
            s.delete(record)
        self.invalidate()
        return rule

    def rules(self, *, subject_kind: str | None = None, subject_id: str | None = None,
             metric: str | None = None) -> list[LimitRule]:
        query = select(LimitRecord).order_by(LimitRecord.subject_kind, LimitRecord.subject_id, LimitRecord.metric,
                                             LimitRecord.route_class, LimitRecord.period)
        if subject_kind:
            query = query.where(LimitRecord.subject_kind == subject_kind)
        if subject_id:
            query = query.where(LimitRecord.subject_id == subject_id)
        if metric:
            query = query.where(LimitRecord.metric == metric)
        with self.db.session() as s:
            return [_rule(r) for r in s.scalars(query)]

    # ---- lookups (cached) ----
    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def known_empty(self) -> bool:
        """True when the cached rules are fresh and there are none (nothing to check, no DB round trip)."""
        with self._lock:
            return self._cached is not None and not self._cached[1] and self.clock() - self._cached[0] < self.cache_s

    def _by_subject(self) -> dict[tuple[str, str], list[LimitRule]]:
        with self._lock:
            if self._cached is not None and self.clock() - self._cached[0] < self.cache_s:
                return self._cached[1]
        index: dict[tuple[str, str], list[LimitRule]] = {}
        for rule in self.rules():
            index.setdefault((rule.subject_kind, rule.subject_id), []).append(rule)
        with self._lock:
            self._cached = (self.clock(), index)
        return index

    def applicable(self, caller: Caller, metrics: tuple[str, ...], route_class: str | None = None
                   ) -> list[tuple[LimitRule, str]]:
        """(rule, subject id) pairs limiting ``caller`` for ``metrics`` (requests: of ``route_class`` or ``all``).
        A subject's own rule replaces the ``*`` rule for the same metric, route class and period."""
        index = self._by_subject()
        if not index:
            return []
        classes = {ALL} if route_class is None else {route_class, ALL}
        found: list[tuple[LimitRule, str]] = []
        for kind, subject_id in caller.subjects():
            chosen: dict[tuple[str, str, str], LimitRule] = {}
            for rule in (*index.get((kind, WILDCARD), ()), *index.get((kind, subject_id), ())):
                if rule.metric in metrics and rule.route_class in classes:
                    chosen[rule.rule_key] = rule  # own rules come last: they win
            found.extend((rule, subject_id) for rule in chosen.values())
        return found
