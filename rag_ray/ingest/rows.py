"""The row shapes that flow between ingest stages (plain dicts, so Ray Data can carry them as Arrow).

Nested values (metadata, group ids) travel as JSON strings: Arrow cannot infer a stable type for an
empty list or a free-form dict across blocks.
"""

from __future__ import annotations

import json
from typing import Any

from rag_ray.types import Acl, Chunk

KIND_CHUNK = "chunk"
KIND_EMPTY = "empty"  # a document that parsed to no text: still recorded in the manifest
KIND_ERROR = "error"  # a document that failed to parse: recorded as a per-item error

CHUNK_COLUMNS = ("kind", "id", "doc_id", "source_uri", "chunk_index", "n_chunks", "text", "content_hash",
                 "metadata_json", "owner_id", "group_ids_json", "visibility", "error")


def chunk_row(chunk: Chunk, n_chunks: int) -> dict[str, Any]:
    return {"kind": KIND_CHUNK, "id": chunk.chunk_id, "doc_id": chunk.doc_id, "source_uri": chunk.source_uri,
            "chunk_index": chunk.chunk_index, "n_chunks": n_chunks, "text": chunk.text,
            "content_hash": chunk.content_hash, "metadata_json": json.dumps(chunk.metadata, ensure_ascii=False,
                                                                            default=str),
            "owner_id": chunk.acl.owner_id, "group_ids_json": json.dumps(list(chunk.acl.group_ids)),
            "visibility": chunk.acl.visibility, "error": ""}


def marker_row(kind: str, task: dict[str, Any], error: str = "", metadata: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """A row that carries no chunk: an empty document or a failed one."""
    return {"kind": kind, "id": "", "doc_id": task["doc_id"], "source_uri": task["source_uri"], "chunk_index": -1,
            "n_chunks": 0, "text": "", "content_hash": task.get("content_hash", ""),
            "metadata_json": json.dumps(metadata or {}, ensure_ascii=False, default=str),
            "owner_id": task.get("owner_id", "system"), "group_ids_json": task.get("group_ids_json", "[]"),
            "visibility": task.get("visibility", "private"), "error": error}


def row_to_chunk(row: dict[str, Any]) -> Chunk:
    acl = Acl(owner_id=row["owner_id"], group_ids=tuple(json.loads(row["group_ids_json"] or "[]")),
              visibility=row["visibility"])
    return Chunk(chunk_id=row["id"], doc_id=row["doc_id"], source_uri=row["source_uri"],
                 chunk_index=int(row["chunk_index"]), text=row["text"], content_hash=row["content_hash"],
                 metadata=json.loads(row["metadata_json"] or "{}"), acl=acl)


def columns_to_rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray Data's column batch (dict of arrays) → list of row dicts."""
    keys = list(batch)
    n = len(batch[keys[0]]) if keys else 0
    return [{k: _py(batch[k][i]) for k in keys} for i in range(n)]


def rows_to_columns(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> dict[str, list[Any]]:
    return {c: [r.get(c) for r in rows] for c in columns}


def _py(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value
