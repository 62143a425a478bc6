"""RDB sync tables (migration 0003): per source+table watermarks, and named sources.

A named source's connection URL is stored encrypted (Fernet, key derived from the server secret);
only its masked form is ever shown.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from rag_ray.config import ServerSecret
from rag_ray.errors import Conflict, InvalidInput, NotFound
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import Base, utcnow
from rag_ray.sources.rdb.config import DatabaseConfig
from rag_ray.types import Acl


class RdbSyncState(Base):
    """The incremental watermark of one table of one source (written only after a clean sync)."""

    __tablename__ = "rdb_sync_state"

    source_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    table_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    watermark_column: Mapped[str] = mapped_column(String(255), default="")
    watermark: Mapped[str | None] = mapped_column(Text, nullable=True)  # typed JSON, see encode_value
    last_mode: Mapped[str] = mapped_column(String(16), default="full")
    last_job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rows_synced: Mapped[int] = mapped_column(Integer, default=0)
    last_synced_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class RdbSource(Base):
    """A named database source: encrypted URL, sync options, refresh interval and the ACL of its chunks."""

    __tablename__ = "rdb_sources"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    database_type: Mapped[str] = mapped_column(String(32))
    url_masked: Mapped[str] = mapped_column(String(2048))
    url_encrypted: Mapped[str] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    refresh_interval_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owner_id: Mapped[str] = mapped_column(String(128), default="system")
    group_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    visibility: Mapped[str] = mapped_column(String(16), default="private")
    last_job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_synced_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


# ---- watermarks and key values: typed JSON so a datetime comes back as a datetime ----
def encode_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return json.dumps({"t": "datetime", "v": value.isoformat()})
    if isinstance(value, dt.date):
        return json.dumps({"t": "date", "v": value.isoformat()})
    if isinstance(value, decimal.Decimal):
        return json.dumps({"t": "decimal", "v": str(value)})
    if isinstance(value, bool | int | float | str):
        return json.dumps({"t": "plain", "v": value})
    raise InvalidInput(f"cannot use a {type(value).__name__} column as a watermark", field="incremental_column")


def decode_value(text: str | None) -> Any:
    if not text:
        return None
    data = json.loads(text)
    decoders: dict[str, Callable[[Any], Any]] = {"datetime": dt.datetime.fromisoformat,
                                                  "date": dt.date.fromisoformat, "decimal": decimal.Decimal}
    return decoders.get(data["t"], lambda v: v)(data["v"])


def load_states(db: MetadataDB, source: str) -> dict[str, RdbSyncState]:
    with db.session() as s:
        return {r.table_name: r for r in s.scalars(select(RdbSyncState).where(RdbSyncState.source_name == source))}


def save_state(db: MetadataDB, source: str, table: str, *, column: str, watermark: Any, mode: str, job_id: str,
               rows: int) -> None:
    with db.session() as s:
        rec = s.get(RdbSyncState, (source, table)) or RdbSyncState(source_name=source, table_name=table)
        rec.watermark_column, rec.watermark = column, encode_value(watermark)
        rec.last_mode, rec.last_job_id, rec.rows_synced = mode, job_id, rows
        rec.last_synced_at = utcnow()
        s.add(rec)


# ---- named sources ----
@dataclass
class NamedSource:
    name: str
    config: DatabaseConfig
    acl: Acl = field(default_factory=Acl)
    options: dict[str, Any] = field(default_factory=dict)
    refresh_interval_s: int | None = None
    last_synced_at: dt.datetime | None = None
    last_job_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "database_type": self.config.kind, "url": self.config.masked_url(),
                "options": self.options, "refresh_interval_s": self.refresh_interval_s,
                "owner_id": self.acl.owner_id, "group_ids": list(self.acl.group_ids),
                "visibility": self.acl.visibility, "last_job_id": self.last_job_id,
                "last_synced_at": self.last_synced_at.isoformat() if self.last_synced_at else None}


def _fernet(secret: str) -> Any:
    """Encrypts with ``secret``; decrypts with it or a retired secret it carries (``ServerSecret``, key rotation)."""
    from cryptography.fernet import Fernet, MultiFernet

    keys = secret.accepted if isinstance(secret, ServerSecret) else (secret,)
    digests = (hashlib.sha256(f"rag-ray rdb sources\x00{k}".encode()).digest() for k in keys)
    return MultiFernet([Fernet(base64.urlsafe_b64encode(d)) for d in digests])


def add_source(db: MetadataDB, secret: str, source: NamedSource, *, replace: bool = False) -> NamedSource:
    if not source.name or len(source.name) > 128 or "/" in source.name:
        raise InvalidInput("a source name is 1-128 characters without '/'", field="name")
    encrypted = _fernet(secret).encrypt(source.config.connect_url().encode()).decode()
    with db.session() as s:
        rec = s.get(RdbSource, source.name)
        if rec is not None and not replace:
            raise Conflict(f"source {source.name!r} already exists", field="name")
        rec = rec or RdbSource(name=source.name)
        rec.database_type, rec.url_masked, rec.url_encrypted = (source.config.kind, source.config.masked_url(),
                                                                encrypted)
        rec.options, rec.refresh_interval_s = dict(source.options), source.refresh_interval_s
        rec.owner_id, rec.group_ids, rec.visibility = (source.acl.owner_id, list(source.acl.group_ids),
                                                       source.acl.visibility)
        s.add(rec)
    return source


def get_source(db: MetadataDB, secret: str, name: str) -> NamedSource:
    with db.session() as s:
        rec = s.get(RdbSource, name)
        if rec is None:
            raise NotFound(f"source {name!r} not found (add it with `rag-cli rdb sources add`)", field="source")
        return _to_source(rec, secret)


def list_sources(db: MetadataDB, secret: str) -> list[NamedSource]:
    with db.session() as s:
        return [_to_source(r, secret) for r in s.scalars(select(RdbSource).order_by(RdbSource.name))]


def remove_source(db: MetadataDB, name: str) -> None:
    with db.session() as s:
        rec = s.get(RdbSource, name)
        if rec is None:
            raise NotFound(f"source {name!r} not found", field="source")
        s.delete(rec)
        for state in s.scalars(select(RdbSyncState).where(RdbSyncState.source_name == name)):
            s.delete(state)


def mark_synced(db: MetadataDB, name: str, job_id: str) -> None:
    with db.session() as s:
        rec = s.get(RdbSource, name)
        if rec is not None:
            rec.last_job_id, rec.last_synced_at = job_id, utcnow()


def due_sources(db: MetadataDB, secret: str, now: dt.datetime | None = None) -> list[NamedSource]:
    """Sources with a refresh interval whose last sync is older than it (or that never synced)."""
    now = now or utcnow()
    due = []
    for source in list_sources(db, secret):
        if source.refresh_interval_s is None:
            continue
        last = source.last_synced_at
        if last is None or (now - _aware(last)).total_seconds() >= source.refresh_interval_s:
            due.append(source)
    return due


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _to_source(rec: RdbSource, secret: str) -> NamedSource:
    from cryptography.fernet import InvalidToken

    try:
        url = _fernet(secret).decrypt(rec.url_encrypted.encode()).decode()
    except InvalidToken:
        raise InvalidInput(f"source {rec.name!r} was saved with another SECRET_KEY; add it again",
                           field="source") from None
    schema = (rec.options or {}).get("schema")
    acl = Acl(rec.owner_id, tuple(rec.group_ids or ()), rec.visibility)  # type: ignore[arg-type]
    try:  # saved before the connection rules (no host overrides, sockets or file options) existed
        config = DatabaseConfig.from_url(url, schema=schema)
    except InvalidInput as exc:
        raise InvalidInput(f"source {rec.name!r} has a connection this server refuses ({exc.message}); "
                           "add it again with `rag-cli rdb sources add --replace`", field="source",
                           details=exc.details) from None
    return NamedSource(name=rec.name, config=config, acl=acl,
                       options=dict(rec.options or {}), refresh_interval_s=rec.refresh_interval_s,
                       last_synced_at=rec.last_synced_at, last_job_id=rec.last_job_id)
