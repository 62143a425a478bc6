"""``GuardService``: requests-per-period limits and LLM token/cost budgets per user, API key and group.

- Requests: every authenticated request is charged once to each rule that applies to its caller and route class
  (``check_request``); over any of them, nothing is charged and the request is refused (429, ``Retry-After``: the
  end of that window, the message naming the limit).
- Budgets: an LLM call first reserves what it may cost — the prompt's estimated tokens plus ``max_tokens``, priced
  at the dearest entry that may serve it — against every token and cost budget of its caller (``reserve``); a call
  that does not fit is refused before any provider is asked. When it ends the reservation is settled to the
  provider's reported usage and cost (``settle``) and the call is recorded for the usage report; a failed call gives
  its reservation back (``release``). Reserving is one atomic admission (``rag_ray.guard.counters``), so a burst of
  concurrent calls on any number of replicas never spends past a budget by more than a provider's prompt count
  exceeds our estimate.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from rag_ray.access.users import API_KEY_PREFIX, find_group, find_user, hash_api_key
from rag_ray.config import Settings
from rag_ray.errors import InvalidInput, NotFound, RateLimited
from rag_ray.guard.context import ALL, Caller
from rag_ray.guard.counters import Charge, CounterStore, window
from rag_ray.guard.limits import BUDGET_METRICS, MICROS, WILDCARD, LimitRule, LimitStore
from rag_ray.guard.usage import UsageLog
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import ApiKey

Clock = Callable[[], float]
PURGE_EVERY_S = 600.0
KEY_ID_CACHE = 10_000  # API key hash → key id (never changes): one lookup per key and process


@dataclass
class _Applied:
    charge: Charge
    rule: LimitRule
    subject_id: str


@dataclass
class Reservation:
    """What an LLM call holds against its caller's budgets until it is settled or released."""

    caller: Caller
    tokens: int
    cost_micros: int
    applied: list[_Applied] = field(default_factory=list)


class GuardService:
    def __init__(self, db: MetadataDB, *, cache_s: float = 5.0, clock: Clock = time.time):
        self.db = db
        self.clock = clock
        self.limits = LimitStore(db, cache_s=cache_s)
        self.counters = CounterStore(db)
        self.usage = UsageLog(db, clock=lambda: self.clock())
        self._next_purge = 0.0
        self._key_ids: dict[str, str | None] = {}
        self._key_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, db: MetadataDB) -> GuardService:
        return cls(db, cache_s=settings.limits_cache_s)

    # ---- requests per period ----
    def check_request(self, caller: Caller) -> None:
        """Charge one request to every rule limiting ``caller`` on its route class; RateLimited when one is full."""
        rules = self.limits.applicable(caller, ("requests",), caller.route_class)
        if not rules:
            return
        now = self.clock()
        applied = [self._apply(rule, subject_id, 1, now) for rule, subject_id in rules]
        self._admit(applied, now, caller)
        self._maybe_purge(now)

    def check_address(self, address: str | None, per_minute: int, route_class: str) -> None:
        """Anonymous requests of ``route_class`` from one client address: at most ``per_minute`` (0: unlimited)."""
        if not address or per_minute <= 0:
            return
        now = self.clock()
        start, end = window("minute", now)
        if self.counters.admit([Charge(f"address:{address}|requests|{route_class}|minute", start, end, 1,
                                       per_minute)]) is not None:
            retry_after = max(1, math.ceil(end - now))
            raise RateLimited(f"rate limit exceeded: {per_minute} requests per minute on {route_class} routes from "
                              f"one client address (RAG_AUTH_RPM_PER_ADDRESS); retry in {retry_after} s",
                              retry_after=retry_after, details={"limit": per_minute, "period": "minute",
                                                                "route_class": route_class})

    def key_id(self, bearer: str) -> str | None:
        """The id of the API key ``bearer`` is (None: a JWT). Called after authentication succeeded."""
        if not bearer.startswith(API_KEY_PREFIX):
            return None
        digest = hash_api_key(bearer)
        with self._key_lock:
            if digest in self._key_ids:
                return self._key_ids[digest]
        with self.db.session() as s:
            key_id = s.scalar(select(ApiKey.key_id).where(ApiKey.key_hash == digest))
        with self._key_lock:
            if len(self._key_ids) >= KEY_ID_CACHE:
                self._key_ids.clear()
            self._key_ids[digest] = key_id
        return key_id

    # ---- LLM budgets ----
    def check_budget(self, caller: Caller) -> None:
        """Refuse at once a caller whose token or cost budget is already used up (before retrieval runs)."""
        rules = self.limits.applicable(caller, BUDGET_METRICS)
        if not rules:
            return
        now = self.clock()
        applied = [self._apply(rule, subject_id, 0, now) for rule, subject_id in rules]
        used = self.counters.used([a.charge for a in applied])
        for item in applied:
            if used[item.charge.order] >= item.charge.limit:
                raise self._refusal(item, now, caller, used=used[item.charge.order])

    def reserve(self, caller: Caller, tokens: int, cost_micros: int) -> Reservation:
        reservation = Reservation(caller, tokens, cost_micros)
        rules = self.limits.applicable(caller, BUDGET_METRICS)
        if rules:
            now = self.clock()
            reservation.applied = [self._apply(rule, subject_id, tokens if rule.metric == "tokens" else cost_micros,
                                               now) for rule, subject_id in rules]
            self._admit(reservation.applied, now, caller)
        return reservation

    def settle(self, reservation: Reservation, *, provider: str, model: str, prompt_tokens: int,
               completion_tokens: int, cost_usd: float) -> None:
        """Replace the reservation by what the call used, and record the call."""
        cost_micros = math.ceil(max(0.0, cost_usd) * MICROS)
        actual = {"tokens": prompt_tokens + completion_tokens, "cost_usd": cost_micros}
        self.counters.adjust([(a.charge, actual[a.rule.metric] - a.charge.amount) for a in reservation.applied])
        self.usage.record(reservation.caller, provider=provider, model=model, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens, cost_micros=cost_micros)

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation whose call failed (nothing was used)."""
        self.counters.adjust([(a.charge, -a.charge.amount) for a in reservation.applied])

    # ---- administration ----
    def set_limit(self, subject_kind: str, subject: str, metric: str, period: str, limit: float, *,
                  route_class: str = ALL, updated_by: str = "") -> LimitRule:
        """``subject``: a user (id or username), an API key id, a group (id or name), or ``*``."""
        subject_id = subject if subject == WILDCARD else self.resolve_subject(subject_kind, subject)
        return self.limits.set(subject_kind, subject_id, metric, period, limit, route_class=route_class,
                               updated_by=updated_by)

    def resolve_subject(self, subject_kind: str, subject: str) -> str:
        with self.db.session() as s:
            if subject_kind == "user":
                return find_user(s, subject).user_id
            if subject_kind == "group":
                return find_group(s, subject).group_id
            if subject_kind == "key":
                if s.get(ApiKey, subject) is None:
                    raise NotFound(f"no API key {subject!r}", field="subject_id")
                return subject
        raise InvalidInput("subject_kind must be user, key or group", field="subject_kind")

    # ---- helpers ----
    @staticmethod
    def _apply(rule: LimitRule, subject_id: str, amount: int, now: float) -> _Applied:
        start, end = window(rule.period, now)
        return _Applied(Charge(rule.counter_key(subject_id), start, end, amount, rule.amount), rule, subject_id)

    def _admit(self, applied: list[_Applied], now: float, caller: Caller) -> None:
        refused = self.counters.admit([a.charge for a in applied])
        if refused is not None:
            item = next(a for a in applied if a.charge == refused)
            raise self._refusal(item, now, caller, used=self.counters.used([refused]).get(refused.order))

    def _refusal(self, item: _Applied, now: float, caller: Caller, used: int | None = None) -> RateLimited:
        rule, charge = item.rule, item.charge
        name = caller.principal.username if rule.subject_kind == "user" else None
        retry_after = max(1, math.ceil(charge.window_end - now))
        what = "rate limit exceeded" if rule.metric == "requests" else "budget exhausted"
        needs = ""
        if rule.metric in BUDGET_METRICS and charge.amount:
            unit = "tokens" if rule.metric == "tokens" else "USD"
            amount = charge.amount if rule.metric == "tokens" else f"{charge.amount / MICROS:g}"
            needs = f"; this call may use up to {amount} {unit}"
        details = {"limit_id": rule.limit_id, "subject_kind": rule.subject_kind, "subject_id": item.subject_id,
                   "metric": rule.metric, "route_class": rule.route_class, "period": rule.period,
                   "limit": rule.value, "retry_after_s": retry_after}
        if used is not None:
            details["used"] = used / MICROS if rule.metric == "cost_usd" else used
        return RateLimited(f"{what}: {rule.describe(item.subject_id, name)}{needs}; retry in {retry_after} s",
                           retry_after=retry_after, field=rule.metric, details=details)

    def _maybe_purge(self, now: float) -> None:
        if now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY_S
            self.counters.purge(now)
