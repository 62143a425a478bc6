"""The chunk collection in Milvus: schema, idempotent upserts, deletes, dense/sparse/hybrid search.

Works against Milvus Lite (server mode) and a real Milvus server. BM25 (sparse) needs a server with
the BM25 function (Milvus Lite 3.x, Milvus 2.5+); on older servers ``supports_bm25`` is False and
sparse/hybrid searches raise a clear capability error.

BM25 reads the ``lexical`` field, which holds the text after client-side analysis
(``rag_ray.retrieval.korean.lexical_text``: Kiwi morphemes for Korean, stop-word-free light-stemmed words
otherwise); queries get the same analysis. Collections created before that field existed keep BM25 on
``text`` and raw query text (``lexical_field == "text"``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from rag_ray.errors import InvalidInput, StoreError
from rag_ray.types import Chunk, SearchHit

SearchStrategy = Literal["dense", "sparse", "hybrid"]

MAX_TEXT_CHARS = 60_000
MAX_GROUPS_PER_CHUNK = 256
LEXICAL_FIELD = "lexical"
_LEXICAL_MAX_CHARS = 20_000  # VARCHAR limits bytes; Hangul is 3 bytes in UTF-8
OUTPUT_FIELDS = ["id", "doc_id", "source_uri", "chunk_index", "text", "metadata", "owner_id", "group_ids",
                 "visibility", "sensitivity", "source_type", "content_hash"]
_DELETE_BATCH = 500
_QUERY_WINDOW = 16_384
# pymilvus pings every 10 s even when idle; gRPC servers on default settings (Milvus Lite's) answer that with
# GOAWAY "too_many_pings" and the shared channel dies. Ping only during calls, at the servers' minimum interval.
GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": 0}
# query_iterator warns on every call against Milvus Lite (no mvcc timestamp); it is harmless.
logging.getLogger("pymilvus").setLevel(logging.ERROR)


class ChunkStore:
    """One Milvus collection of chunks. Pass a connected ``MilvusClient``."""

    def __init__(self, client: Any, collection: str, dimension: int, *, enable_bm25: bool | None = None):
        self.client = client
        self.collection = collection
        self.dimension = dimension
        self.supports_bm25 = self._detect_bm25() if enable_bm25 is None else enable_bm25
        self.lexical_field: str | None = LEXICAL_FIELD if self.supports_bm25 else None
        self._loaded = False

    @classmethod
    def connect(cls, uri: str, collection: str, dimension: int, *, token: str = "",
                enable_bm25: bool | None = None) -> ChunkStore:
        from pymilvus import MilvusClient

        try:
            client = MilvusClient(uri=uri, token=token, timeout=30, grpc_options=GRPC_OPTIONS)
        except Exception as exc:  # pymilvus raises several unrelated types on connect failure
            raise StoreError(f"cannot connect to Milvus at {uri}: {exc}") from exc
        store = cls(client, collection, dimension, enable_bm25=enable_bm25)
        store.ensure_collection()
        return store

    # ---- schema ----
    def _detect_bm25(self) -> bool:
        """BM25 functions arrived in Milvus 2.5 (Milvus Lite 3.x has them; the `milvus` 2.3.5 package
        reports "v2.3.5-lite", so the number decides, not the suffix)."""
        try:
            version = str(self.client.get_server_version())
        except Exception:
            return False
        match = re.match(r"v?(\d+)\.(\d+)", version.strip())
        if match is None:
            return "lite" in version.lower()
        return (int(match.group(1)), int(match.group(2))) >= (2, 5)

    def _schema(self) -> Any:
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=64)
        schema.add_field("source_uri", DataType.VARCHAR, max_length=2048)
        schema.add_field("source_type", DataType.VARCHAR, max_length=32)
        schema.add_field("chunk_index", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=65535)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dimension)
        if self.supports_bm25:
            schema.add_field(LEXICAL_FIELD, DataType.VARCHAR, max_length=65535, enable_analyzer=True)
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(Function(name="text_bm25", function_type=FunctionType.BM25,
                                         input_field_names=[LEXICAL_FIELD], output_field_names=["sparse"]))
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("owner_id", DataType.VARCHAR, max_length=128)
        schema.add_field("group_ids", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_GROUPS_PER_CHUNK,
                         max_length=128)
        schema.add_field("visibility", DataType.VARCHAR, max_length=16)
        schema.add_field("sensitivity", DataType.VARCHAR, max_length=16)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("updated_at", DataType.INT64)
        return schema

    def _index_params(self) -> Any:
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="IP")
        if self.supports_bm25:
            index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        return index

    def ensure_collection(self) -> None:
        try:
            if not self.client.has_collection(self.collection):
                # Schema first, index second: Milvus 2.3 mis-assigns indexes sent with create_collection.
                self.client.create_collection(self.collection, schema=self._schema(), consistency_level="Strong")
                self.client.create_index(self.collection, self._index_params())
            else:
                self._check_dimension()
            self.client.load_collection(self.collection)  # reopened collections start released
            self._loaded = True
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot prepare collection {self.collection!r}: {exc}") from exc

    def _check_dimension(self) -> None:
        info = self.client.describe_collection(self.collection)
        for field in info.get("fields", []):
            if field.get("name") == "vector":
                dim = int(field.get("params", {}).get("dim", self.dimension))
                if dim != self.dimension:
                    raise StoreError(f"collection {self.collection!r} holds {dim}-d vectors but the embedder makes "
                                     f"{self.dimension}-d ones; use another RAG_COLLECTION or re-ingest")
            if field.get("name") == "sparse":
                self.supports_bm25 = True
        names = {f.get("name") for f in info.get("fields", [])}
        if "sparse" not in names:
            self.supports_bm25 = False
        self.lexical_field = None if not self.supports_bm25 else LEXICAL_FIELD if LEXICAL_FIELD in names else "text"

    def drop(self) -> None:
        self.client.drop_collection(self.collection)

    # ---- writes ----
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray | Sequence[Sequence[float]]) -> int:
        if len(chunks) != len(vectors):
            raise StoreError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if not chunks:
            return 0
        now = int(time.time())
        rows = [self._with_lexical(_row(chunk, vector, now))
                for chunk, vector in zip(chunks, vectors, strict=True)]
        try:
            result = self.client.upsert(self.collection, rows)
        except Exception as exc:
            raise StoreError(f"upsert of {len(rows)} chunks failed: {exc}") from exc
        return int(result.get("upsert_count", len(rows))) if isinstance(result, dict) else len(rows)

    def upsert_rows(self, rows: list[dict[str, Any]]) -> int:
        """Upsert rows already in collection shape (used by the Ray Data sink)."""
        if rows:
            self.client.upsert(self.collection, [self._with_lexical(dict(r)) for r in rows])
        return len(rows)

    def _with_lexical(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.lexical_field == LEXICAL_FIELD and LEXICAL_FIELD not in row:
            row[LEXICAL_FIELD] = self.analyze(str(row.get("text", "")))
        return row

    def analyze(self, text: str) -> str:
        """What BM25 indexes / searches for ``text`` in this collection."""
        if self.lexical_field != LEXICAL_FIELD:
            return text
        from rag_ray.retrieval.korean import lexical_text  # lazy: rag_ray.retrieval imports this module

        return lexical_text(text)[:_LEXICAL_MAX_CHARS]

    def delete_ids(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        for start in range(0, len(ids), _DELETE_BATCH):
            self.client.delete(self.collection, ids=ids[start:start + _DELETE_BATCH])
        return len(ids)

    def delete_where(self, expr: str) -> None:
        if not expr:
            raise StoreError("refusing to delete with an empty filter")
        self.client.delete(self.collection, filter=expr)

    def flush(self) -> None:
        try:
            self.client.flush(self.collection)
        except Exception:  # Milvus Lite flushes on its own; older servers may not expose flush
            return

    # ---- reads ----
    def query(self, expr: str, fields: Sequence[str] = ("id",), limit: int | None = None) -> list[dict[str, Any]]:
        """All rows matching ``expr``; pages with an iterator past Milvus's 16,384-row query window."""
        window = min(limit or _QUERY_WINDOW, _QUERY_WINDOW)
        first = list(self.client.query(self.collection, filter=expr or "", output_fields=list(fields), limit=window))
        if len(first) < _QUERY_WINDOW or limit == len(first):
            return first
        out: list[dict[str, Any]] = []
        iterator = self.client.query_iterator(self.collection, batch_size=1000, limit=limit or -1,
                                              filter=expr or "", output_fields=list(fields))
        try:
            while batch := iterator.next():
                out.extend(batch)
        finally:
            iterator.close()
        return out

    def ids_where(self, expr: str) -> set[str]:
        return {row["id"] for row in self.query(expr, ("id",))}

    def count(self, expr: str = "") -> int:
        result = self.client.query(self.collection, filter=expr or "", output_fields=["count(*)"])
        return int(result[0]["count(*)"]) if result else 0

    def get(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        return list(self.client.get(self.collection, ids=list(ids), output_fields=OUTPUT_FIELDS))

    def search(self, *, vector: Sequence[float] | None = None, text: str | None = None, k: int = 5, expr: str = "",
               strategy: SearchStrategy = "dense", rrf_k: int = 60, weights: tuple[float, float] | None = None
               ) -> list[SearchHit]:
        """Search by ``vector`` (dense), ``text`` (BM25) or both (hybrid), restricted by ``expr``."""
        if k < 1:
            raise InvalidInput("k must be at least 1", field="k")
        if strategy != "dense" and not self.supports_bm25:
            raise InvalidInput(f"search_strategy {strategy!r} needs BM25, which this Milvus server lacks "
                               "(Milvus 2.5+ or Milvus Lite); use 'dense'", field="search_strategy")
        try:
            if strategy == "dense":
                results = self._dense(vector, k, expr)
            elif strategy == "sparse":
                results = self._sparse(text, k, expr)
            else:
                results = self._hybrid(vector, text, k, expr, rrf_k, weights)
        except (InvalidInput, StoreError):
            raise
        except Exception as exc:
            raise StoreError(f"{strategy} search failed: {exc}") from exc
        hits = [_hit(item) for item in (results[0] if results else [])]
        if strategy == "sparse":  # Milvus Lite reports BM25 as a negative distance; servers 2.5+ as a positive score
            hits = [replace(h, score=abs(h.score)) for h in hits]
        return hits

    def _dense(self, vector: Sequence[float] | None, k: int, expr: str) -> Any:
        if vector is None:
            raise InvalidInput("dense search needs a query vector", field="query")
        return self.client.search(self.collection, data=[list(map(float, vector))], anns_field="vector", filter=expr,
                                  limit=k, output_fields=OUTPUT_FIELDS, search_params={"metric_type": "IP"})

    def _sparse(self, text: str | None, k: int, expr: str) -> Any:
        if not text:
            raise InvalidInput("sparse search needs query text", field="query")
        analyzed = self.analyze(text)
        if not analyzed.strip():  # only stop words / punctuation: nothing for BM25 to match
            return [[]]
        return self.client.search(self.collection, data=[analyzed], anns_field="sparse", filter=expr, limit=k,
                                  output_fields=OUTPUT_FIELDS, search_params={"metric_type": "BM25"})

    def _hybrid(self, vector: Sequence[float] | None, text: str | None, k: int, expr: str, rrf_k: int,
                weights: tuple[float, float] | None) -> Any:
        from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

        if vector is None or not text:
            raise InvalidInput("hybrid search needs query text and vector", field="query")
        fetch = max(k, 20)
        requests = [
            AnnSearchRequest(data=[list(map(float, vector))], anns_field="vector", param={"metric_type": "IP"},
                             limit=fetch, expr=expr or None),
            AnnSearchRequest(data=[self.analyze(text) or text], anns_field="sparse", param={"metric_type": "BM25"},
                             limit=fetch, expr=expr or None),
        ]
        ranker = WeightedRanker(*weights) if weights else RRFRanker(rrf_k)
        return self.client.hybrid_search(self.collection, requests, ranker, limit=k, output_fields=OUTPUT_FIELDS)


def _row(chunk: Chunk, vector: Sequence[float], now: int) -> dict[str, Any]:
    if len(chunk.text) > MAX_TEXT_CHARS:
        raise StoreError(f"chunk {chunk.chunk_id} is longer than {MAX_TEXT_CHARS} characters")
    meta = dict(chunk.metadata)
    return {
        "id": chunk.chunk_id,
        "doc_id": chunk.doc_id,
        "source_uri": chunk.source_uri[:2048],
        "source_type": str(meta.get("source_type", "file"))[:32],
        "chunk_index": int(chunk.chunk_index),
        "text": chunk.text,
        "vector": [float(x) for x in vector],
        "metadata": json.loads(json.dumps(meta, default=str)),
        "owner_id": chunk.acl.owner_id,
        "group_ids": list(chunk.acl.group_ids)[:MAX_GROUPS_PER_CHUNK],
        "visibility": chunk.acl.visibility,
        "sensitivity": str(meta.get("sensitivity", "public"))[:16],
        "content_hash": chunk.content_hash,
        "created_at": int(meta.get("created_at", now)),
        "updated_at": now,
    }


def _hit(item: dict[str, Any]) -> SearchHit:
    entity = item.get("entity", item)
    metadata = dict(entity.get("metadata") or {})
    for key in ("owner_id", "visibility", "sensitivity", "source_type"):
        if key in entity:
            metadata.setdefault(key, entity[key])
    if "group_ids" in entity:
        metadata.setdefault("group_ids", list(entity["group_ids"] or []))
    return SearchHit(chunk_id=str(entity.get("id", item.get("id"))), doc_id=entity.get("doc_id", ""),
                     source_uri=entity.get("source_uri", ""), chunk_index=int(entity.get("chunk_index", 0)),
                     text=entity.get("text", ""), score=float(item.get("distance", item.get("score", 0.0))),
                     metadata=metadata)
