"""The index registry in the metadata DB (``IndexCollectionRecord``/``IndexDocStateRecord``, migration 0005): the
collections behind an alias and, for each collection that is not live, which version of every document it holds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select

from rag_ray.errors import NotFound
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import IndexCollectionRecord, IndexDocStateRecord

# building → ready (or failed | cancelled) → live ⇄ standby; dropped at the operator's request
BUILDING, READY, FAILED, CANCELLED, LIVE, STANDBY, DROPPED = (
    "building", "ready", "failed", "cancelled", "live", "standby", "dropped")
MODE_REEMBED, MODE_RECHUNK, MODE_ADOPTED = "reembed", "rechunk", "adopted"
_DOC_BATCH = 500


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class IndexEntry:
    """One collection of an alias, as registered."""

    name: str
    alias: str
    embedding_model: str
    dimension: int
    chunk_size: int | None
    chunk_overlap: int | None
    mode: str
    status: str
    job_id: str | None
    previous: str | None
    message: str
    created_at: datetime | None
    synced_at: datetime | None
    switched_at: datetime | None

    @classmethod
    def of(cls, rec: IndexCollectionRecord) -> IndexEntry:
        return cls(rec.name, rec.alias, rec.embedding_model, rec.dimension, rec.chunk_size, rec.chunk_overlap,
                   rec.mode, rec.status, rec.job_id, rec.previous, rec.message or "", rec.created_at, rec.synced_at,
                   rec.switched_at)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("created_at", "synced_at", "switched_at"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


class IndexRegistry:
    def __init__(self, db: MetadataDB):
        self.db = db

    def get(self, name: str) -> IndexEntry | None:
        with self.db.session() as s:
            rec = s.get(IndexCollectionRecord, name)
            return IndexEntry.of(rec) if rec is not None else None

    def require(self, name: str) -> IndexEntry:
        entry = self.get(name)
        if entry is None:
            raise NotFound(f"collection {name!r} is not a registered index collection", field="collection")
        return entry

    def list(self, alias: str) -> list[IndexEntry]:
        with self.db.session() as s:
            query = select(IndexCollectionRecord).where(IndexCollectionRecord.alias == alias)
            return [IndexEntry.of(r) for r in s.scalars(query.order_by(IndexCollectionRecord.created_at))]

    def register(self, name: str, alias: str, *, embedding_model: str, dimension: int, chunk_size: int | None,
                 chunk_overlap: int | None, mode: str, status: str, job_id: str | None = None) -> None:
        with self.db.session() as s:
            rec = s.get(IndexCollectionRecord, name) or IndexCollectionRecord(name=name, created_at=utcnow())
            rec.alias, rec.embedding_model, rec.dimension, rec.mode = alias, embedding_model, dimension, mode
            rec.chunk_size, rec.chunk_overlap, rec.status, rec.job_id = chunk_size, chunk_overlap, status, job_id
            rec.message = rec.message or ""
            s.add(rec)

    def update(self, name: str, **values: Any) -> None:
        with self.db.session() as s:
            rec = s.get(IndexCollectionRecord, name)
            if rec is None:
                raise NotFound(f"collection {name!r} is not a registered index collection", field="collection")
            for key, value in values.items():
                setattr(rec, key, value)

    # ---- document states of a collection that is not live ----
    def doc_states(self, name: str) -> dict[str, str]:
        with self.db.session() as s:
            rows = s.execute(select(IndexDocStateRecord.doc_id, IndexDocStateRecord.fingerprint)
                             .where(IndexDocStateRecord.collection == name))
            return {doc_id: fp for doc_id, fp in rows}

    def set_doc_states(self, name: str, states: Mapping[str, str]) -> None:
        """Record (or replace) the states of these documents."""
        items = list(states.items())
        for start in range(0, len(items), _DOC_BATCH):
            part = dict(items[start:start + _DOC_BATCH])
            with self.db.session() as s:
                s.execute(delete(IndexDocStateRecord).where(IndexDocStateRecord.collection == name,
                                                            IndexDocStateRecord.doc_id.in_(list(part))))
                s.add_all(IndexDocStateRecord(collection=name, doc_id=d, fingerprint=fp) for d, fp in part.items())

    def forget_docs(self, name: str, doc_ids: Iterable[str]) -> None:
        ids = list(doc_ids)
        for start in range(0, len(ids), _DOC_BATCH):
            part = ids[start:start + _DOC_BATCH]
            with self.db.session() as s:
                s.execute(delete(IndexDocStateRecord).where(IndexDocStateRecord.collection == name,
                                                            IndexDocStateRecord.doc_id.in_(part)))

    def replace_doc_states(self, name: str, states: Mapping[str, str]) -> None:
        with self.db.session() as s:
            s.execute(delete(IndexDocStateRecord).where(IndexDocStateRecord.collection == name))
        self.set_doc_states(name, states)
