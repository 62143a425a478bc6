"""The chunk collection in Milvus: schema, idempotent upserts, deletes, dense/sparse/hybrid search.

Works against Milvus Lite (server mode) and a real Milvus server. BM25 (sparse) needs a server with
the BM25 function (Milvus Lite 3.x, Milvus 2.5+); on older servers ``supports_bm25`` is False and
sparse/hybrid searches raise a clear capability error.

The dense index is a setting (``VectorIndex``: AUTOINDEX by default, FLAT, IVF_FLAT with nlist/nprobe, HNSW with
M/efConstruction/ef), built when the collection is created and used by every dense and hybrid search. Milvus Lite
keeps no index parameters (``describe_index`` reports none back), so it refuses IVF_FLAT and HNSW with a ConfigError
naming ``RAG_MILVUS_INDEX_TYPE`` rather than silently ignoring them.

BM25 reads the ``lexical`` field, which holds the text after client-side analysis
(``rag_ray.text.korean.lexical_text``: Kiwi morphemes for Korean, stop-word-free light-stemmed words
otherwise); queries get the same analysis. Collections created before that field existed keep BM25 on
``text`` and raw query text (``lexical_field == "text"``).

Group membership is matched on ``group_key`` (``rag_ray.store.filters.group_key``: the ``group_ids`` array as one
VARCHAR), because Milvus Lite scans ``array_contains_any`` at ~50 µs a row and cannot index an ARRAY. Collections
created before that field (and on Milvus 2.3, whose ``like`` only matches prefixes) have ``keyed_groups == False``
and are filtered on the array; ``rag-cli index rebuild`` + ``switch`` moves one onto the current schema.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from rag_ray.errors import ConfigError, InvalidInput, RagError, StoreError
from rag_ray.store.filters import GROUP_KEY_FIELD, group_key
from rag_ray.types import Chunk, SearchHit

SearchStrategy = Literal["dense", "sparse", "hybrid"]
IndexType = Literal["AUTOINDEX", "FLAT", "IVF_FLAT", "HNSW"]
TUNED_INDEXES = frozenset({"IVF_FLAT", "HNSW"})  # the types whose parameters Milvus Lite would not keep

MAX_TEXT_CHARS = 60_000
UNNUMBERED_LITE = (99, 0)  # a Milvus Lite that reports no release number: a recent one, with every capability
UNKNOWN_RELEASE = (0, 0)  # not asked or not answered: assume none of the version-gated capabilities
MAX_GROUPS_PER_CHUNK = 256
MAX_GROUP_KEY_CHARS = 65_535  # Milvus's VARCHAR limit
LEXICAL_FIELD = "lexical"
_LEXICAL_MAX_CHARS = 20_000  # VARCHAR limits bytes; Hangul is 3 bytes in UTF-8
OUTPUT_FIELDS = ["id", "doc_id", "source_uri", "chunk_index", "text", "metadata", "owner_id", "group_ids",
                 "visibility", "sensitivity", "source_type", "content_hash"]
INDEX_POLL_FIRST_S, INDEX_POLL_MAX_S = 0.01, 0.5  # an empty collection's index is built at once
INDEX_BUILD_TIMEOUT_S = 120.0
_DELETE_BATCH = 500
_QUERY_WINDOW = 16_384
# pymilvus pings every 10 s even when idle; gRPC servers on default settings (Milvus Lite's) answer that with
# GOAWAY "too_many_pings" and the shared channel dies. Ping only during calls, at the servers' minimum interval.
GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": 0}
# query_iterator warns on every call against Milvus Lite (no mvcc timestamp); it is harmless.
logging.getLogger("pymilvus").setLevel(logging.ERROR)
log = logging.getLogger(__name__)
# Milvus refusing an expression (a filter the caller sent): Milvus Lite answers code 6, servers 2.4+ code 1100
# (parameter invalid), older servers code 1 with a parse message.
_REJECTED_CODES = frozenset({6, 1100})
_REJECTED_MESSAGE = re.compile(r"cannot parse expression|failed to create query plan|incompatible types|"
                               r"invalid expression|requires a string operand", re.IGNORECASE)


def store_failure(action: str, exc: BaseException, *, filtered: bool = False) -> RagError:
    """A failed Milvus call as a library error carrying neither the expression nor the driver's message.

    Both are logged here under a short reference, which the error carries instead (``details.error_id``).
    A ``filtered`` call (one with a filter expression) that Milvus refused for its expression failed on the
    caller's filters: InvalidInput; anything else: StoreError.
    """
    ref = uuid.uuid4().hex[:12]
    details = {"error_id": ref}
    if filtered and _rejected_expression(exc):
        log.warning("store rejected an expression [%s] during %s: %s", ref, action, exc)
        return InvalidInput(f"the filters cannot be applied to the stored fields (reference {ref})",
                            field="filters", details=details)
    log.error("store error [%s] during %s: %s", ref, action, exc)
    return StoreError(f"{action} failed (reference {ref})", details=details)


def _rejected_expression(exc: BaseException) -> bool:
    code = getattr(exc, "code", None)
    message = str(getattr(exc, "message", "") or exc)
    return code in _REJECTED_CODES or bool(_REJECTED_MESSAGE.search(message))


@contextmanager
def mapped_errors(action: str, *, filtered: bool = False) -> Iterator[None]:
    """Driver exceptions inside become :func:`store_failure` errors; library errors pass through."""
    try:
        yield
    except RagError:
        raise
    except Exception as exc:
        raise store_failure(action, exc, filtered=filtered) from exc


# Collection property naming the embedder (``provider:model``) that wrote the vectors.
EMBEDDING_MODEL_PROPERTY = "rag.embedding_model"


@dataclass(frozen=True)
class StoredEmbedding:
    """What an existing collection says about its vectors."""

    dimension: int
    model: str | None  # ``provider:model``; None for collections created before it was recorded

    def mismatch(self, collection: str, model: str | None, dimension: int) -> ConfigError | None:
        """A ConfigError naming both sides when ``model``/``dimension`` are not what wrote the collection."""
        same_model = model is None or self.model is None or self.model.lower() == model.lower()
        if same_model and self.dimension == dimension:
            return None
        configured = f"{model or 'the configured embedder'} ({dimension}-d)"
        return ConfigError(f"collection {collection!r} holds {self.dimension}-d vectors from "
                           f"{self.model or 'an unrecorded embedding model'}, but the configured embedder is "
                           f"{configured}; configure that model again (EMBEDDING_PROVIDER/EMBEDDING_MODEL), use "
                           "another RAG_COLLECTION, or re-ingest into a new collection", field="EMBEDDING_MODEL")


def check_collection_compatible(store: ChunkStore, provider_id: str, dimension: int) -> None:
    """Startup check that the embedder ``provider_id`` (``dimension``-d) wrote ``store``'s collection: a
    ConfigError naming both otherwise. A missing collection passes (it is created with this model recorded); an
    existing one without a recorded model (created before it was recorded) adopts ``provider_id``."""
    stored = store.stored_embedding()
    if stored is None:
        return
    mismatch = stored.mismatch(store.collection, provider_id, dimension)
    if mismatch is not None:
        raise mismatch
    if stored.model is None:
        store.record_embedding_model(provider_id)


@dataclass(frozen=True)
class VectorIndex:
    """How the dense vectors are indexed (at collection creation) and searched (every dense/hybrid search).

    Settings: ``RAG_MILVUS_INDEX_TYPE`` and ``RAG_MILVUS_IVF_NLIST`` / ``RAG_MILVUS_IVF_NPROBE`` (IVF_FLAT: clusters
    built / searched), ``RAG_MILVUS_HNSW_M`` / ``RAG_MILVUS_HNSW_EF_CONSTRUCTION`` / ``RAG_MILVUS_HNSW_EF`` (HNSW:
    links per node, candidates while building / while searching; a search uses at least its ``limit``)."""

    index_type: IndexType = "AUTOINDEX"
    nlist: int = 1024
    nprobe: int = 16
    m: int = 16
    ef_construction: int = 200
    ef: int = 64

    def __post_init__(self) -> None:
        if self.index_type == "IVF_FLAT" and self.nprobe > self.nlist:
            raise ConfigError(f"RAG_MILVUS_IVF_NPROBE ({self.nprobe}) cannot exceed RAG_MILVUS_IVF_NLIST "
                              f"({self.nlist}): it is how many of those clusters a search visits",
                              field="RAG_MILVUS_IVF_NPROBE")

    def build_params(self) -> dict[str, int]:
        if self.index_type == "IVF_FLAT":
            return {"nlist": self.nlist}
        if self.index_type == "HNSW":
            return {"M": self.m, "efConstruction": self.ef_construction}
        return {}

    def search_params(self, limit: int) -> dict[str, Any]:
        if self.index_type == "IVF_FLAT":
            return {"metric_type": "IP", "params": {"nprobe": self.nprobe}}
        if self.index_type == "HNSW":  # Milvus refuses an ef below the number of hits asked for
            return {"metric_type": "IP", "params": {"ef": max(self.ef, limit)}}
        return {"metric_type": "IP"}


class ChunkStore:
    """One Milvus collection of chunks. Pass a connected ``MilvusClient``. ``embedding_model``
    (``provider:model``) is recorded on a collection this store creates and checked on one it opens.
    ``enable_bm25``/``keyed_groups``: None, what the server supports (an opened collection: what it has)."""

    def __init__(self, client: Any, collection: str, dimension: int, *, enable_bm25: bool | None = None,
                 embedding_model: str | None = None, index: VectorIndex | None = None,
                 keyed_groups: bool | None = None):
        self.client = client
        self.collection = collection
        self.dimension = dimension
        self.embedding_model = embedding_model
        self.index = index or VectorIndex()
        release = self._server_release() if None in (enable_bm25, keyed_groups) else UNKNOWN_RELEASE  # one round trip
        self.supports_bm25 = release >= (2, 5) if enable_bm25 is None else enable_bm25
        self.keyed_groups = release >= (2, 4) if keyed_groups is None else keyed_groups  # infix like
        self.lexical_field: str | None = LEXICAL_FIELD if self.supports_bm25 else None
        self._loaded = False

    @classmethod
    def connect(cls, uri: str, collection: str, dimension: int, *, token: str = "",
                enable_bm25: bool | None = None, embedding_model: str | None = None,
                timeout_s: float = 30.0, index: VectorIndex | None = None,
                keyed_groups: bool | None = None) -> ChunkStore:
        from pymilvus import MilvusClient

        with mapped_errors(f"connecting to Milvus at {uri}"):  # pymilvus raises several unrelated types here
            client = MilvusClient(uri=uri, token=token, timeout=timeout_s, grpc_options=GRPC_OPTIONS)
        store = cls(client, collection, dimension, enable_bm25=enable_bm25, embedding_model=embedding_model,
                    index=index, keyed_groups=keyed_groups)
        store.ensure_collection()
        return store

    # ---- schema ----
    def _server_release(self) -> tuple[int, int]:
        """(major, minor): BM25 functions arrived in Milvus 2.5, infix ``like`` in 2.4. Milvus Lite 3.x has both and
        may report no number; the `milvus` 2.3.5 package reports "v2.3.5-lite", so the number decides, not the
        suffix."""
        version = self.server_version()
        match = re.match(r"v?(\d+)\.(\d+)", version.strip())
        if match is None:
            return UNNUMBERED_LITE if "lite" in version.lower() else UNKNOWN_RELEASE
        return int(match.group(1)), int(match.group(2))

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
        if self.keyed_groups:
            schema.add_field(GROUP_KEY_FIELD, DataType.VARCHAR, max_length=MAX_GROUP_KEY_CHARS)
        schema.add_field("visibility", DataType.VARCHAR, max_length=16)
        schema.add_field("sensitivity", DataType.VARCHAR, max_length=16)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("updated_at", DataType.INT64)
        return schema

    def _index_params(self) -> Any:
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", index_type=self.index.index_type, metric_type="IP",
                        params=self.index.build_params())
        if self.supports_bm25:
            index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        return index

    def server_version(self) -> str:
        try:
            return str(self.client.get_server_version())
        except Exception:
            return ""

    def _check_index_supported(self) -> None:
        """Milvus Lite (``milvus_lite-3.x``) accepts IVF_FLAT/HNSW but keeps none of their parameters: refuse them."""
        if self.index.index_type in TUNED_INDEXES and self.server_version().lower().startswith("milvus_lite"):
            raise ConfigError(f"RAG_MILVUS_INDEX_TYPE={self.index.index_type} needs a Milvus server: Milvus Lite keeps "
                              "no index parameters (it searches exhaustively); use AUTOINDEX or FLAT with Milvus Lite, "
                              "or set MILVUS_URI to a Milvus server", field="RAG_MILVUS_INDEX_TYPE")

    def _check_existing_index(self) -> None:
        """A collection keeps the index it was created with: a different configured type is refused, not ignored."""
        if self.index.index_type == "AUTOINDEX":
            return
        built = self.vector_index_info().get("index_type")
        if built and built != self.index.index_type:
            raise ConfigError(f"collection {self.collection!r} has a {built} index but RAG_MILVUS_INDEX_TYPE is "
                              f"{self.index.index_type}; rebuild it (rag-cli index rebuild) or use another "
                              "RAG_COLLECTION", field="RAG_MILVUS_INDEX_TYPE")

    def vector_index_info(self) -> dict[str, Any]:
        """What Milvus reports for the dense index (``index_type``, ``metric_type`` and, on servers, its params)."""
        with mapped_errors(f"describing the vector index of {self.collection!r}"):
            return dict(self.client.describe_index(self.collection, "vector") or {})

    def ensure_collection(self) -> None:
        self._check_index_supported()
        with mapped_errors(f"preparing collection {self.collection!r}"):
            if not self.client.has_collection(self.collection):
                # Schema first, index second: Milvus 2.3 mis-assigns indexes sent with create_collection.
                properties = {EMBEDDING_MODEL_PROPERTY: self.embedding_model} if self.embedding_model else {}
                self.client.create_collection(self.collection, schema=self._schema(), consistency_level="Strong",
                                              properties=properties)
                self._create_indexes()
            else:
                self._check_dimension()
                self._check_existing_index()
            self.client.load_collection(self.collection)  # reopened collections start released
            self._loaded = True

    def _create_indexes(self) -> None:
        """Create the indexes, then wait until Milvus reports them built. pymilvus's own wait sleeps 0.5 s before
        its first look at each index — a second per new collection, where an empty collection's indexes are built
        at once — so this one looks first and backs off from there."""
        params = self._index_params()
        self.client.create_index(self.collection, params, sync=False)
        for param in params:
            self._wait_index_built(param.field_name)

    def _wait_index_built(self, field: str) -> None:
        deadline = time.monotonic() + INDEX_BUILD_TIMEOUT_S
        pause = INDEX_POLL_FIRST_S
        while (state := (self.client.describe_index(self.collection, field) or {}).get("state")) != "Finished":
            if state == "Failed":
                raise StoreError(f"Milvus failed to build the index on {self.collection}.{field}")
            if time.monotonic() > deadline:
                raise StoreError(f"the index on {self.collection}.{field} was not built within "
                                 f"{INDEX_BUILD_TIMEOUT_S:.0f} s (state {state})")
            time.sleep(pause)  # polling Milvus's index state: it has no notification
            pause = min(pause * 2, INDEX_POLL_MAX_S)

    def _check_dimension(self) -> None:
        info = self.client.describe_collection(self.collection)
        mismatch = _stored_embedding(info).mismatch(self.collection, self.embedding_model, self.dimension)
        if mismatch is not None:
            raise mismatch
        for field in info.get("fields", []):
            if field.get("name") == "sparse":
                self.supports_bm25 = True
        names = {f.get("name") for f in info.get("fields", [])}
        if "sparse" not in names:
            self.supports_bm25 = False
        self.lexical_field = None if not self.supports_bm25 else LEXICAL_FIELD if LEXICAL_FIELD in names else "text"
        self.keyed_groups = GROUP_KEY_FIELD in names
        if not self.keyed_groups:
            log.warning("collection %r has no %s field (created before it): access filters match groups on the "
                        "group_ids array, which Milvus Lite scans at ~50 µs a row; `rag-cli index rebuild` and "
                        "`switch` move it onto the current schema", self.collection, GROUP_KEY_FIELD)

    def stored_embedding(self) -> StoredEmbedding | None:
        """The dimension and recorded embedding model of the collection; None when it does not exist."""
        with mapped_errors(f"describing collection {self.collection!r}"):
            if not self.client.has_collection(self.collection):
                return None
            return _stored_embedding(self.client.describe_collection(self.collection))

    def record_embedding_model(self, model: str) -> None:
        with mapped_errors(f"recording the embedding model of {self.collection!r}"):
            self.client.alter_collection_properties(self.collection, properties={EMBEDDING_MODEL_PROPERTY: model})

    def drop(self) -> None:
        self.client.drop_collection(self.collection)

    # ---- writes ----
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray | Sequence[Sequence[float]]) -> int:
        if len(chunks) != len(vectors):
            raise StoreError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if not chunks:
            return 0
        rows = self.rows(chunks, vectors)
        with mapped_errors(f"upsert of {len(rows)} chunks"):
            result = self.client.upsert(self.collection, rows)
        return int(result.get("upsert_count", len(rows))) if isinstance(result, dict) else len(rows)

    def rows(self, chunks: Sequence[Chunk], vectors: np.ndarray | Sequence[Sequence[float]]) -> list[dict[str, Any]]:
        """Chunks in collection shape (with their BM25 text), for ``upsert_rows``."""
        now = int(time.time())
        return [self._completed(_row(chunk, vector, now)) for chunk, vector in zip(chunks, vectors, strict=True)]

    def upsert_rows(self, rows: list[dict[str, Any]]) -> int:
        """Upsert rows already in collection shape (used by the Ray Data sink)."""
        if rows:
            with mapped_errors(f"upsert of {len(rows)} rows"):
                self.client.upsert(self.collection, [self._completed(dict(r)) for r in rows])
        return len(rows)

    def _completed(self, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` with the derived fields this collection has (and none it lacks): BM25 text, group key."""
        if self.lexical_field == LEXICAL_FIELD and LEXICAL_FIELD not in row:
            row[LEXICAL_FIELD] = self.analyze(str(row.get("text", "")))
        if self.keyed_groups:
            row[GROUP_KEY_FIELD] = _group_key(row)
        else:
            row.pop(GROUP_KEY_FIELD, None)
        return row

    def analyze(self, text: str) -> str:
        """What BM25 indexes / searches for ``text`` in this collection."""
        if self.lexical_field != LEXICAL_FIELD:
            return text
        from rag_ray.text.korean import lexical_text  # lazy: Kiwi loads its model on import

        return lexical_text(text)[:_LEXICAL_MAX_CHARS]

    def delete_ids(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        with mapped_errors(f"delete of {len(ids)} chunks"):
            for start in range(0, len(ids), _DELETE_BATCH):
                self.client.delete(self.collection, ids=ids[start:start + _DELETE_BATCH])
        return len(ids)

    def delete_where(self, expr: str) -> None:
        if not expr:
            raise StoreError("refusing to delete with an empty filter")
        with mapped_errors("delete by filter", filtered=True):
            self.client.delete(self.collection, filter=expr)

    def flush(self) -> None:
        try:
            self.client.flush(self.collection)
        except Exception:  # Milvus Lite flushes on its own; older servers may not expose flush
            return

    def seal_and_warm(self) -> None:
        """After a job's writes: seal them and search them once, so users' searches find them indexed. Milvus Lite
        scans unsealed rows on every BM25 search (6–6.7 s a search over 20k new rows; ~100 ms sealed and warm) and
        builds a sealed segment's index on its first search (the same 6 s, once): the job pays that, not every
        query after it. Best effort: a failure here is logged, never the job's."""
        try:
            self.client.flush(self.collection)
            self.search(vector=[1.0] + [0.0] * (self.dimension - 1), k=1)
            if self.supports_bm25:
                self.search(text="index", k=1, strategy="sparse")
        except Exception as exc:  # pymilvus raises several unrelated types; the rows are stored either way
            log.warning("sealing and warming %r after a write failed: %s", self.collection, exc)

    # ---- reads ----
    def query(self, expr: str, fields: Sequence[str] = ("id",), limit: int | None = None) -> list[dict[str, Any]]:
        """All rows matching ``expr``; pages with an iterator past Milvus's 16,384-row query window."""
        window = min(limit or _QUERY_WINDOW, _QUERY_WINDOW)
        with mapped_errors("query", filtered=True):
            first = list(self.client.query(self.collection, filter=expr or "", output_fields=list(fields),
                                           limit=window))
            if len(first) < _QUERY_WINDOW or limit == len(first):
                return first
            return self._query_all(expr, fields, limit)

    def _query_all(self, expr: str, fields: Sequence[str], limit: int | None) -> list[dict[str, Any]]:
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
        with mapped_errors("count", filtered=True):
            result = self.client.query(self.collection, filter=expr or "", output_fields=["count(*)"])
        return int(result[0]["count(*)"]) if result else 0

    def get(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        with mapped_errors("get"):
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
        with mapped_errors(f"{strategy} search", filtered=True):
            if strategy == "dense":
                results = self._dense(vector, k, expr)
            elif strategy == "sparse":
                results = self._sparse(text, k, expr)
            else:
                results = self._hybrid(vector, text, k, expr, rrf_k, weights)
        hits = [_hit(item) for item in (results[0] if results else [])]
        if strategy == "sparse":  # Milvus Lite reports BM25 as a negative distance; servers 2.5+ as a positive score
            hits = [replace(h, score=abs(h.score)) for h in hits]
        return hits

    def _dense(self, vector: Sequence[float] | None, k: int, expr: str) -> Any:
        if vector is None:
            raise InvalidInput("dense search needs a query vector", field="query")
        return self.client.search(self.collection, data=[list(map(float, vector))], anns_field="vector", filter=expr,
                                  limit=k, output_fields=OUTPUT_FIELDS, search_params=self.index.search_params(k))

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
            AnnSearchRequest(data=[list(map(float, vector))], anns_field="vector",
                             param=self.index.search_params(fetch), limit=fetch, expr=expr or None),
            AnnSearchRequest(data=[self.analyze(text) or text], anns_field="sparse", param={"metric_type": "BM25"},
                             limit=fetch, expr=expr or None),
        ]
        ranker = WeightedRanker(*weights) if weights else RRFRanker(rrf_k)
        return self.client.hybrid_search(self.collection, requests, ranker, limit=k, output_fields=OUTPUT_FIELDS)


def _stored_embedding(info: dict[str, Any]) -> StoredEmbedding:
    vector = next(f for f in info.get("fields", []) if f.get("name") == "vector")
    model = (info.get("properties") or {}).get(EMBEDDING_MODEL_PROPERTY)
    return StoredEmbedding(int(vector.get("params", {})["dim"]), str(model) if model else None)


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


def _group_key(row: dict[str, Any]) -> str:
    key = group_key(row.get("group_ids") or ())
    if len(key) > MAX_GROUP_KEY_CHARS:
        raise StoreError(f"chunk {row.get('id')}: its group ids take more than {MAX_GROUP_KEY_CHARS} characters "
                         "together; share it with fewer or shorter-named groups")
    return key


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
