"""Identity and document-permission changes, audited where they are written: an ORM ``after_flush`` hook turns
every change of a user, group, membership, API key or limit rule, every ACL change and every deletion of a document
into audit rows, inserted in the same transaction as the change (both commit or neither does). So the admin API,
``rag-cli``, the bootstrap and ingest jobs are all covered without each remembering to log.

Installed for the process by importing ``rag_ray.audit``. Never recorded: password hashes, key hashes, key prefixes.
Not seen: bulk SQL statements (``delete(...).where(...)``), which ingest uses only to mirror rows deleted at a source.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from rag_ray.audit.log import append, event_row
from rag_ray.metadata.models import ApiKey, DocumentRecord, Group, LimitRecord, Membership, User

Event = tuple[str, str, str, dict[str, Any]]  # action, target type, target id, details
SKIP_PASSWORD_CHANGE = "audit_skip_password_change"  # Session.info flag: a rehash at login is no password change
ACL_FIELDS = ("owner_id", "group_ids", "visibility")


def _changed(obj: Any, name: str) -> tuple[Any, Any] | None:
    """(old, new) when attribute ``name`` of ``obj`` changed in this flush."""
    history = inspect(obj).attrs[name].history
    if not history.has_changes():
        return None
    old = history.deleted[0] if history.deleted else None
    new = history.added[0] if history.added else None
    return None if old == new else (old, new)


def _user_events(session: Session, user: User, kind: str) -> Iterator[Event]:
    if kind == "new":
        yield "user.create", "user", user.user_id, {"username": user.username, "role": user.role,
                                                    "active": bool(user.is_active)}
        return
    if kind == "deleted":
        yield "user.delete", "user", user.user_id, {"username": user.username}
        return
    if (role := _changed(user, "role")) is not None:
        yield "user.role_change", "user", user.user_id, {"username": user.username, "from": role[0], "to": role[1]}
    if (active := _changed(user, "is_active")) is not None:
        yield ("user.activate" if active[1] else "user.deactivate"), "user", user.user_id, {"username": user.username}
    if _changed(user, "password_hash") is not None and not session.info.get(SKIP_PASSWORD_CHANGE):
        yield "user.password_change", "user", user.user_id, {"username": user.username}
    fields = [f for f in ("username", "email") if _changed(user, f) is not None]
    if fields:
        yield "user.update", "user", user.user_id, {"username": user.username, "fields": fields}


def _group_events(group: Group, kind: str) -> Iterator[Event]:
    if kind == "dirty":
        fields = [f for f in ("name", "description") if _changed(group, f) is not None]
        if fields:
            yield "group.update", "group", group.group_id, {"name": group.name, "fields": fields}
        return
    yield ("group.create" if kind == "new" else "group.delete"), "group", group.group_id, {"name": group.name}


def _membership_events(membership: Membership, kind: str) -> Iterator[Event]:
    if kind != "dirty":
        action = "membership.add" if kind == "new" else "membership.remove"
        yield action, "user", membership.user_id, {"group_id": membership.group_id}


def _api_key_events(key: ApiKey, kind: str) -> Iterator[Event]:
    details = {"user_id": key.user_id, "name": key.name}
    if kind == "new":
        yield "api_key.create", "api_key", key.key_id, {**details, "expires_at": key.expires_at}
    elif kind == "deleted":
        yield "api_key.delete", "api_key", key.key_id, details
    elif (revoked := _changed(key, "revoked_at")) is not None and revoked[0] is None:
        yield "api_key.revoke", "api_key", key.key_id, details


def _document_events(doc: DocumentRecord, kind: str) -> Iterator[Event]:
    if kind == "deleted":
        yield "document.delete", "document", doc.doc_id, {"source_uri": doc.source_uri, "owner_id": doc.owner_id,
                                                          "source_type": doc.source_type}
        return
    if kind != "dirty":
        return
    changes = {f: c for f in ACL_FIELDS if (c := _changed(doc, f)) is not None}
    if changes:
        before = {f: changes[f][0] if f in changes else getattr(doc, f) for f in ACL_FIELDS}
        after = {f: getattr(doc, f) for f in ACL_FIELDS}
        yield "document.acl_change", "document", doc.doc_id, {"source_uri": doc.source_uri, "before": before,
                                                              "after": after}


def _limit_events(rule: LimitRecord, kind: str) -> Iterator[Event]:
    details = {"subject_kind": rule.subject_kind, "subject_id": rule.subject_id, "metric": rule.metric,
               "route_class": rule.route_class, "period": rule.period, "amount": rule.amount}
    if kind == "deleted":
        yield "limits.delete", "limit", rule.limit_id, details
    elif kind == "new" or _changed(rule, "amount") is not None:
        yield "limits.set", "limit", rule.limit_id, details


def _events(session: Session, obj: Any, kind: str) -> Iterator[Event]:
    if isinstance(obj, User):
        yield from _user_events(session, obj, kind)
    elif isinstance(obj, Group):
        yield from _group_events(obj, kind)
    elif isinstance(obj, Membership):
        yield from _membership_events(obj, kind)
    elif isinstance(obj, ApiKey):
        yield from _api_key_events(obj, kind)
    elif isinstance(obj, DocumentRecord):
        yield from _document_events(obj, kind)
    elif isinstance(obj, LimitRecord):
        yield from _limit_events(obj, kind)


def _after_flush(session: Session, _context: Any) -> None:
    at = datetime.now(UTC)
    rows = []
    for kind, objects in (("new", session.new), ("dirty", session.dirty), ("deleted", session.deleted)):
        for obj in objects:
            for action, target_type, target_id, details in _events(session, obj, kind):
                rows.append(event_row(action, target_type=target_type, target_id=target_id, details=details, at=at))
    append(session.connection(), rows)


def install() -> None:
    """Audit every ORM session of this process (idempotent)."""
    if not event.contains(Session, "after_flush", _after_flush):
        event.listen(Session, "after_flush", _after_flush)
