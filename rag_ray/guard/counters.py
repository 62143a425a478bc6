"""Counters of limited quantities, shared by every router replica through the metadata DB.

A counter is one row per (key, window). Admission is atomic without locks held across statements: each charge is
one conditional ``UPDATE … SET used = used + n WHERE … AND used + n <= limit`` (an insert-if-absent first creates
the row), all charges of one admission in one transaction, in key order (no deadlocks). A charge that does not fit
rolls the transaction back, so either every counter moved or none did. PostgreSQL and MariaDB re-check the WHERE
against the latest committed row under the row lock; SQLite runs writers one at a time. Concurrent bursts therefore
cannot overspend on any of them.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, select, tuple_, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from rag_ray.errors import InvalidInput
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import CounterRecord
from rag_ray.metadata.statements import DEADLOCK_RETRIES, insert_if_absent, is_deadlock

COUNTERS: Table = CounterRecord.__table__  # type: ignore[assignment]
FIXED_PERIODS = {"minute": 60, "hour": 3600}
PERIODS = ("minute", "hour", "day", "month")  # day and month: UTC calendar days and months
PURGE_GRACE_S = 3600  # a window's row outlives it by this much (late settlements of long calls still find it)


def window(period: str, now: float) -> tuple[int, int]:
    """(start, end) in epoch seconds of the ``period`` window holding ``now``."""
    if period in FIXED_PERIODS:
        size = FIXED_PERIODS[period]
        start = int(now // size * size)
        return start, start + size
    moment = datetime.fromtimestamp(now, UTC)
    if period == "day":
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return int(day.timestamp()), int((day + timedelta(days=1)).timestamp())
    if period == "month":
        first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        days = calendar.monthrange(first.year, first.month)[1]
        return int(first.timestamp()), int((first + timedelta(days=days)).timestamp())
    raise InvalidInput(f"period must be one of {', '.join(PERIODS)}", field="period")


@dataclass(frozen=True)
class Charge:
    """``amount`` added to counter ``key`` in the window starting ``window_start``, if it stays within ``limit``."""

    key: str
    window_start: int
    window_end: int
    amount: int
    limit: int

    @property
    def order(self) -> tuple[str, int]:
        return self.key, self.window_start


class CounterStore:
    def __init__(self, db: MetadataDB):
        self.db = db

    def admit(self, charges: Sequence[Charge]) -> Charge | None:
        """Add every charge, or — when one would pass its limit — none; returns the first that did not fit."""
        if not charges:
            return None
        for attempt in range(DEADLOCK_RETRIES):
            try:
                return self._admit_once(sorted(charges, key=lambda c: c.order))
            except OperationalError as exc:
                if not is_deadlock(exc) or attempt == DEADLOCK_RETRIES - 1:
                    raise
        return None  # unreachable: the last attempt returns or raises

    def _admit_once(self, ordered: Sequence[Charge]) -> Charge | None:
        refused: list[Charge] = []
        try:
            with self.db.session() as s:
                for charge in ordered:
                    self._ensure(s, charge)
                    if not self._add_within_limit(s, charge):
                        refused.append(charge)
                        raise _Refused
        except _Refused:
            return refused[0]
        return None

    def adjust(self, changes: Sequence[tuple[Charge, int]]) -> None:
        """Add ``delta`` (may be negative) to each charge's counter, unconditionally (settling a reservation)."""
        changes = sorted(((c, d) for c, d in changes if d), key=lambda cd: cd[0].order)
        for attempt in range(DEADLOCK_RETRIES if changes else 0):
            try:
                with self.db.session() as s:
                    for charge, delta in changes:
                        self._ensure(s, charge)
                        s.execute(update(COUNTERS).where(*_row(charge)).values(used=COUNTERS.c.used + delta))
                return
            except OperationalError as exc:
                if not is_deadlock(exc) or attempt == DEADLOCK_RETRIES - 1:
                    raise

    def used(self, charges: Sequence[Charge]) -> dict[tuple[str, int], int]:
        """What each charge's counter holds now (0 for a window nobody used yet)."""
        keys = list({c.order for c in charges})
        if not keys:
            return {}
        query = select(COUNTERS.c.counter_key, COUNTERS.c.window_start, COUNTERS.c.used).where(
            tuple_(COUNTERS.c.counter_key, COUNTERS.c.window_start).in_(keys))
        with self.db.session() as s:
            found = {(k, w): int(u) for k, w, u in s.execute(query)}
        return {k: found.get(k, 0) for k in keys}

    def purge(self, now: float) -> int:
        """Delete the rows of windows that ended more than ``PURGE_GRACE_S`` ago."""
        with self.db.session() as s:
            result = s.execute(delete(COUNTERS).where(COUNTERS.c.expires_at < int(now) - PURGE_GRACE_S))
            return int(getattr(result, "rowcount", 0) or 0)

    # ---- statements ----
    @staticmethod
    def _ensure(session: Session, charge: Charge) -> None:
        insert_if_absent(session, COUNTERS, {"counter_key": charge.key, "window_start": charge.window_start,
                                             "used": 0, "expires_at": charge.window_end})

    @staticmethod
    def _add_within_limit(session: Session, charge: Charge) -> bool:
        result = session.execute(update(COUNTERS).where(*_row(charge), COUNTERS.c.used + charge.amount <= charge.limit)
                                 .values(used=COUNTERS.c.used + charge.amount))
        return int(getattr(result, "rowcount", 0) or 0) == 1


def _row(charge: Charge) -> tuple[Any, ...]:
    return COUNTERS.c.counter_key == charge.key, COUNTERS.c.window_start == charge.window_start


class _Refused(Exception):
    """Rolls back an admission's transaction."""
