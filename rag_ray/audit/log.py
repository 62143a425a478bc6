"""``AuditLog``: the append-only record of security-relevant events, in the metadata DB (``audit_events``).

Every row names the actor (user id and name, or ``cli:<account>``, ``job:<id>``, ``system``), the action, its target,
the outcome, the time, the request id and the client address. Nothing here updates or deletes a row (the database
refuses to as well: triggers of migration 0006). Secrets never reach a row: ``clean_details`` drops any field whose
name says password, secret, token, hash or credential, and any value that looks like a JWT or an API key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, insert, or_, select

from rag_ray.audit.context import Actor, current_actor, request_id_of
from rag_ray.errors import InvalidInput
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import AuditEvent

Clock = Callable[[], float]
SUCCESS, FAILURE, DENIED = "success", "failure", "denied"
MAX_LIST = 1000
EVENTS: Table = AuditEvent.__table__  # type: ignore[assignment]
REDACTED = "[redacted]"

# What gets recorded (``action``): the catalogue documented in the README.
ACTIONS = (
    "auth.login", "auth.refresh", "auth.revoke", "auth.api_key", "auth.lockout", "auth.unlock",
    "user.create", "user.update", "user.role_change", "user.activate", "user.deactivate", "user.password_change",
    "user.delete", "group.create", "group.update", "group.delete", "membership.add", "membership.remove",
    "api_key.create", "api_key.revoke", "api_key.delete", "document.acl_change", "document.delete",
    "document.read", "document.list", "limits.set", "limits.delete", "access.denied",
)

_SECRET_NAME = re.compile(r"pass|secret|token|hash|authori|credential|cookie|^key$|api_key$", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"^(eyJ[\w-]+\.[\w-]+\.[\w-]*|rr_[\w-]{8,}|bearer\s.+)$", re.IGNORECASE)
_MAX_VALUE_CHARS = 512


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor_id: str | None
    actor_name: str
    action: str
    target_type: str
    target_id: str
    outcome: str
    request_id: str | None
    address: str | None
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.isoformat(), "actor_id": self.actor_id, "actor_name": self.actor_name,
                "action": self.action, "target_type": self.target_type, "target_id": self.target_id,
                "outcome": self.outcome, "request_id": self.request_id, "address": self.address,
                "details": self.details}


def clean_details(details: Mapping[str, Any] | None, depth: int = 0) -> dict[str, Any]:
    """``details`` safe to store: secret-named fields and secret-looking values redacted, long strings cut."""
    out: dict[str, Any] = {}
    for key, value in (details or {}).items():
        out[str(key)[:64]] = REDACTED if _SECRET_NAME.search(str(key)) else _clean_value(value, depth)
    return out


def _clean_value(value: Any, depth: int) -> Any:
    if isinstance(value, Mapping):
        return clean_details(value, depth + 1) if depth < 3 else REDACTED
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean_value(v, depth + 1) for v in list(value)[:64]]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return REDACTED if _SECRET_VALUE.match(value.strip()) else value[:_MAX_VALUE_CHARS]
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)[:_MAX_VALUE_CHARS]


def event_row(action: str, *, target_type: str = "", target_id: str = "", outcome: str = SUCCESS,
              details: Mapping[str, Any] | None = None, actor: Actor | None = None, at: datetime) -> dict[str, Any]:
    """The ``audit_events`` values of one event (``actor`` default: the bound one)."""
    actor = actor or current_actor()
    return {"at": at, "actor_id": actor.user_id, "actor_name": (actor.name or "")[:128], "action": action[:64],
            "target_type": target_type[:32], "target_id": str(target_id or "")[:255], "outcome": outcome[:16],
            "request_id": (request_id_of(actor) or None), "address": (actor.address or None),
            "details": clean_details(details)}


def append(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert events on ``connection`` (inside the transaction that made the change they record)."""
    if rows:
        connection.execute(insert(EVENTS), rows)


class AuditLog:
    def __init__(self, db: MetadataDB, clock: Clock = time.time):
        self.db = db
        self.clock = clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def record(self, action: str, *, target_type: str = "", target_id: str = "", outcome: str = SUCCESS,
               details: Mapping[str, Any] | None = None, actor: Actor | None = None) -> None:
        """Append one event in its own transaction (it stays recorded when the caller's action fails)."""
        row = event_row(action, target_type=target_type, target_id=target_id, outcome=outcome, details=details,
                        actor=actor, at=self.now())
        with self.db.session() as s:
            append(s.connection(), [row])

    def list(self, *, actor: str | None = None, action: str | None = None, target: str | None = None,
             since: datetime | None = None, until: datetime | None = None, outcome: str | None = None,
             limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
        """Newest first. ``actor``: a user id or an actor name; ``action``: exact, or a prefix ending in ``.``
        (``user.``); ``target``: a target id; ``since`` inclusive, ``until`` exclusive; ``before_id``: the page
        after the one that ended with that id."""
        if not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIST}", field="limit")
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if actor:
            query = query.where(or_(AuditEvent.actor_id == actor, AuditEvent.actor_name == actor))
        if action:
            query = query.where(AuditEvent.action.startswith(action, autoescape=True) if action.endswith(".")
                                else AuditEvent.action == action)
        if target:
            query = query.where(AuditEvent.target_id == target)
        if outcome:
            query = query.where(AuditEvent.outcome == outcome)
        if since is not None:
            query = query.where(AuditEvent.at >= _utc(since))
        if until is not None:
            query = query.where(AuditEvent.at < _utc(until))
        if before_id is not None:
            query = query.where(AuditEvent.id < before_id)
        with self.db.session() as s:
            return [_entry(e) for e in s.scalars(query)]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _entry(event: AuditEvent) -> AuditEntry:
    return AuditEntry(event.id, _utc(event.at), event.actor_id, event.actor_name, event.action, event.target_type,
                      event.target_id, event.outcome, event.request_id, event.address, dict(event.details or {}))
