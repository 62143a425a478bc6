"""Login protection: failed credential attempts counted per username and per client address, and a temporary
lockout once either reaches its limit within the window (``RAG_LOGIN_*``). Invalid API keys and refresh tokens are
counted per client address the same way.

While a subject is locked every attempt is refused with 429 and ``Retry-After`` — the same answer whether the
username exists or not, and the password is still hashed once, so neither the answer nor its timing tells users
apart. A successful login clears its username's count (never an address's: one valid account must not reset a
guessing address). Admins unlock a user (``POST /admin/users/{id}/unlock``).

Each failure is one single-statement ``UPDATE`` (window roll-over, count, lock) on a row per subject, so replicas
sharing the metadata DB count together and concurrent failures are never lost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, and_, case, delete, or_, select, update

from rag_ray.config import Settings
from rag_ray.errors import RateLimited
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import LoginThrottleRecord
from rag_ray.metadata.statements import insert_if_absent

THROTTLE: Table = LoginThrottleRecord.__table__  # type: ignore[assignment]
Clock = Callable[[], float]
Subject = tuple[str, str]  # (kind, subject)
USER, ADDRESS, API_KEY, REFRESH = "user", "address", "api_key", "refresh"
_WHAT = {USER: "failed logins for this username", ADDRESS: "failed logins from this address",
         API_KEY: "invalid API keys from this address", REFRESH: "invalid refresh tokens from this address"}


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int = 5  # per username
    address_max_failures: int = 20  # per client address (logins, API keys, refresh tokens each)
    window_s: int = 900
    lockout_s: int = 900

    @classmethod
    def from_settings(cls, settings: Settings) -> LockoutPolicy:
        return cls(settings.login_max_failures, settings.login_address_max_failures,
                   int(settings.login_failure_window_s), int(settings.login_lockout_s))

    def limit(self, kind: str) -> int:
        return self.max_failures if kind == USER else self.address_max_failures


@dataclass(frozen=True)
class Lock:
    kind: str
    subject: str
    failures: int
    locked_until: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "failures": self.failures,
                "locked_until": self.locked_until}


def login_subjects(username: str, address: str | None) -> list[Subject]:
    """Usernames are counted case-folded (a case-insensitive collation must not give an attacker fresh counts)."""
    found = [(USER, username.strip().lower()[:255])]
    if address:
        found.append((ADDRESS, address[:255]))
    return found


class LoginLockout:
    def __init__(self, db: MetadataDB, policy: LockoutPolicy | None = None, clock: Clock = time.time):
        self.db = db
        self.policy = policy or LockoutPolicy()
        self.clock = clock

    def refusal(self, subjects: Sequence[Subject]) -> RateLimited | None:
        """The error to answer with when one of ``subjects`` is locked now, else None."""
        wanted = [s for s in subjects if s[1]]
        if not wanted:
            return None
        now = int(self.clock())
        query = select(THROTTLE.c.kind, THROTTLE.c.subject, THROTTLE.c.locked_until).where(
            THROTTLE.c.locked_until > now, *_any_of(wanted))
        with self.db.session() as s:
            locked = list(s.execute(query))
        if not locked:
            return None
        kind, _subject, until = max(locked, key=lambda r: r[2])
        retry_after = max(1, math.ceil(until - now))
        return RateLimited(f"too many {_WHAT.get(kind, 'failed attempts')}: locked for {retry_after} s",
                           retry_after=retry_after, details={"lockout": kind, "retry_after_s": retry_after})

    def fail(self, subjects: Sequence[Subject]) -> list[Subject]:
        """Count one failure for each subject; returns those this failure locked."""
        now = int(self.clock())
        newly_locked = []
        for kind, subject in subjects:
            if subject and self._fail_one(kind, subject, now):
                newly_locked.append((kind, subject))
        return newly_locked

    def _fail_one(self, kind: str, subject: str, now: int) -> bool:
        policy = self.policy
        row = (THROTTLE.c.kind == kind, THROTTLE.c.subject == subject)
        expired = THROTTLE.c.window_start + policy.window_s <= now
        failures = case((expired, 1), else_=THROTTLE.c.failures + 1)
        reaches = failures >= policy.limit(kind)
        # every right-hand side reads the row as it was (MySQL assigns left to right: locked_until goes first,
        # before the columns it reads are assigned)
        statement = update(THROTTLE).where(*row).ordered_values(
            (THROTTLE.c.locked_until, case((reaches, now + policy.lockout_s), else_=THROTTLE.c.locked_until)),
            (THROTTLE.c.failures, failures),
            (THROTTLE.c.window_start, case((expired, now), else_=THROTTLE.c.window_start)))
        with self.db.session() as s:
            insert_if_absent(s, THROTTLE, {"kind": kind, "subject": subject, "failures": 0, "window_start": 0,
                                           "locked_until": 0})
            s.execute(statement)
            failures_now, locked_until = s.execute(select(THROTTLE.c.failures, THROTTLE.c.locked_until)
                                                   .where(*row)).one()
        return failures_now == policy.limit(kind) and locked_until > now


    def succeeded(self, username: str) -> None:
        """A successful login clears its username's failures."""
        self.clear([(USER, username.strip().lower())])

    def clear(self, subjects: Sequence[Subject]) -> int:
        """Forget failures and locks of ``subjects``; returns how many were locked."""
        wanted = [s for s in subjects if s[1]]
        if not wanted:
            return 0
        now = int(self.clock())
        with self.db.session() as s:
            locked = s.execute(select(THROTTLE.c.subject).where(THROTTLE.c.locked_until > now, *_any_of(wanted)))
            count = len(list(locked))
            s.execute(delete(THROTTLE).where(*_any_of(wanted)))
        return count

    def locks(self) -> list[Lock]:
        """Every subject locked now."""
        now = int(self.clock())
        with self.db.session() as s:
            rows = s.execute(select(THROTTLE).where(THROTTLE.c.locked_until > now)
                             .order_by(THROTTLE.c.locked_until.desc()))
            return [Lock(r.kind, r.subject, int(r.failures), int(r.locked_until)) for r in rows]


def _any_of(subjects: Sequence[Subject]) -> list[Any]:
    return [or_(*(and_(THROTTLE.c.kind == kind, THROTTLE.c.subject == subject) for kind, subject in subjects))]
