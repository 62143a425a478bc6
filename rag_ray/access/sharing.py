"""Changing who may read a document: the manifest row and every chunk of it in Milvus, together."""

from __future__ import annotations

import time
from typing import Any

from rag_ray.metadata import DocumentRecord, MetadataDB
from rag_ray.store.filters import user_filter
from rag_ray.store.milvus import MAX_GROUPS_PER_CHUNK, OUTPUT_FIELDS, ChunkStore
from rag_ray.types import Acl, Principal

# Every stored field except the BM25 output, which Milvus recomputes from ``text`` on upsert.
CHUNK_FIELDS = [*OUTPUT_FIELDS, "vector", "created_at", "updated_at"]
_UPSERT_BATCH = 500


def _doc_expr(doc_id: str) -> str:
    return user_filter({"doc_id": doc_id})


def document_owner(db: MetadataDB, store: ChunkStore, doc_id: str) -> str | None:
    """The owner id of ``doc_id`` (manifest first, else its chunks); None when the document does not exist."""
    with db.session() as s:
        record = s.get(DocumentRecord, doc_id)
        if record is not None:
            return record.owner_id
    rows = store.query(_doc_expr(doc_id), ("id", "owner_id"), limit=1)
    return str(rows[0]["owner_id"]) if rows else None


def may_change_acl(principal: Principal, owner_id: str | None) -> bool:
    return owner_id is not None and (principal.is_admin or owner_id == principal.user_id)


def set_document_acl(db: MetadataDB, store: ChunkStore, doc_id: str, acl: Acl) -> int:
    """Stamp ``acl`` on the manifest row and on every chunk of ``doc_id``; returns the chunks updated.

    The Milvus upsert runs inside the DB transaction, so a store failure leaves the manifest unchanged.
    """
    groups = list(dict.fromkeys(acl.group_ids))[:MAX_GROUPS_PER_CHUNK]
    with db.session() as s:
        record = s.get(DocumentRecord, doc_id)
        if record is not None:
            record.owner_id, record.group_ids, record.visibility = acl.owner_id, groups, acl.visibility
        rows = store.query(_doc_expr(doc_id), CHUNK_FIELDS)
        updated = [_restamp(row, acl.owner_id, groups, acl.visibility) for row in rows]
        for start in range(0, len(updated), _UPSERT_BATCH):
            store.upsert_rows(updated[start:start + _UPSERT_BATCH])
    return len(updated)


def _restamp(row: dict[str, Any], owner_id: str, group_ids: list[str], visibility: str) -> dict[str, Any]:
    out = {k: row[k] for k in CHUNK_FIELDS if k in row}
    out["vector"] = [float(x) for x in row["vector"]]
    out.update(owner_id=owner_id, group_ids=group_ids, visibility=visibility, updated_at=int(time.time()))
    return out
