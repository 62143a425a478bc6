"""Bringing a collection that is not live up to date with the live one, document by document.

Every document has a fingerprint over its live chunks (ids, content hashes, ACL, labels, metadata). A collection
being built, or kept as a rollback target, records the fingerprint of every document it holds (the metadata DB,
``index_doc_states``); a sync compares them with the live collection's and re-materialises the documents that
changed, appeared or went away. A first build is a sync from nothing. Whatever path wrote to the live collection
meanwhile (an ingest job, an ACL change, a relabel, a deletion, a restore) is caught, with no hook in the writers.

Materialising a document for the target: its live chunk rows re-embedded with the target's model (ids, ACLs,
governance labels, timestamps carried over); or, when the target chunks differently, its source file parsed and
chunked again (ACL and ingest metadata carried over, labels recomputed) — documents without a readable source file
(database rows, files gone) keep their live chunks, re-embedded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_ray.embedding.base import Embedder
from rag_ray.enrich import ENRICHED_KEYS
from rag_ray.errors import RagError
from rag_ray.index.records import IndexRegistry
from rag_ray.ingest.rows import CHUNK_COLUMNS, chunk_row, columns_to_rows, row_to_chunk, rows_to_columns
from rag_ray.ingest.stages import EnrichChunks, chunk_document
from rag_ray.metadata import DocumentRecord, MetadataDB
from rag_ray.sources.files import parse_file
from rag_ray.store.filters import literal_list
from rag_ray.store.milvus import ChunkStore, mapped_errors
from rag_ray.text.chunking import Chunker
from rag_ray.types import Acl, Chunk

FINGERPRINT_FIELDS = ("id", "content_hash", "owner_id", "group_ids", "visibility", "sensitivity", "metadata")
SCAN_FIELDS = ("doc_id", *FINGERPRINT_FIELDS)
DERIVED_FIELDS = {"vector", "sparse"}  # what a target computes itself
DOCS_PER_BATCH = 32
TEXTS_PER_EMBED = 128
_SCAN_BATCH = 2000
_MOD = 1 << 256


def row_digest(row: dict[str, Any]) -> int:
    groups = sorted(map(str, row.get("group_ids") or ()))
    payload = [row.get("id"), row.get("content_hash"), row.get("owner_id"), groups, row.get("visibility"),
               row.get("sensitivity"), row.get("metadata") or {}]
    text = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest(), "big")


class Fingerprints:
    """Per-document fingerprints from chunk rows seen in any order (an order-free sum of row digests)."""

    def __init__(self) -> None:
        self._sums: dict[str, tuple[int, int]] = {}

    def add(self, rows: Iterable[dict[str, Any]]) -> Fingerprints:
        for row in rows:
            total, count = self._sums.get(row["doc_id"], (0, 0))
            self._sums[row["doc_id"]] = ((total + row_digest(row)) % _MOD, count + 1)
        return self

    def result(self) -> dict[str, str]:
        return {doc: hashlib.sha256(f"{total:x}:{count}".encode()).hexdigest()
                for doc, (total, count) in self._sums.items()}


def scan_fingerprints(store: ChunkStore) -> dict[str, str]:
    """Fingerprint of every document in ``store`` (scalar fields only, paged)."""
    # pymilvus' iterator warns on every call against Milvus Lite (no mvcc timestamp): harmless
    logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
    prints = Fingerprints()
    with mapped_errors(f"scanning collection {store.collection!r}"):
        iterator = store.client.query_iterator(store.collection, batch_size=_SCAN_BATCH, filter="",
                                               output_fields=list(SCAN_FIELDS))
        try:
            while batch := iterator.next():
                prints.add(batch)
        finally:
            iterator.close()
    return prints.result()


@dataclass
class SyncPlan:
    changed: list[str]  # documents to (re)materialise: new or different in the live collection
    removed: list[str]  # documents the target holds that the live collection no longer has
    live_docs: int

    @property
    def items(self) -> int:
        return len(self.changed) + len(self.removed)


def plan_sync(live: ChunkStore, held: dict[str, str]) -> SyncPlan:
    current = scan_fingerprints(live)
    changed = [doc for doc, fp in current.items() if held.get(doc) != fp]
    return SyncPlan(changed, [doc for doc in held if doc not in current], len(current))


@dataclass(frozen=True)
class Rechunk:
    """Chunking of a target that differs from the live collection's: documents are chunked from their sources."""

    chunk_size: int
    chunk_overlap: int
    enrichment_level: str = "standard"
    max_file_bytes: int | None = None


@dataclass
class SyncStats:
    docs: int = 0
    removed: int = 0
    chunks: int = 0
    from_source: int = 0  # documents chunked again from their source file
    carried: int = 0  # documents a re-chunking target kept the live chunks of (no readable source file)
    notes: list[str] = field(default_factory=list)

    def merge(self, other: SyncStats) -> None:
        self.docs += other.docs
        self.removed += other.removed
        self.chunks += other.chunks
        self.from_source += other.from_source
        self.carried += other.carried
        self.notes.extend(other.notes)


class Materializer:
    """Writes documents of the live collection into ``target`` the way ``target`` is built."""

    def __init__(self, live: ChunkStore, target: ChunkStore, embedder: Embedder, *, copy_fields: Sequence[str],
                 db: MetadataDB | None = None, rechunk: Rechunk | None = None):
        self.live = live
        self.target = target
        self.embedder = embedder
        self.copy_fields = list(copy_fields)
        self.db = db
        self.rechunk = rechunk
        self._enrich = EnrichChunks(rechunk.enrichment_level) if rechunk else None

    def materialize(self, doc_ids: Sequence[str]) -> tuple[dict[str, str], SyncStats]:
        """(fingerprints of the live state written, stats); documents gone from the live collection are absent."""
        rows = self.live.query(f"doc_id in {literal_list(doc_ids)}", self.copy_fields)
        by_doc: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_doc.setdefault(row["doc_id"], []).append(row)
        self.target.delete_where(f"doc_id in {literal_list(doc_ids)}")
        stats = SyncStats(docs=len(by_doc))
        copies: list[dict[str, Any]] = []
        fresh: list[Chunk] = []
        for doc_id, doc_rows in by_doc.items():
            chunks = self._from_source(doc_id, doc_rows, stats) if self.rechunk else None
            if chunks is None:
                copies.extend(doc_rows)
            else:
                fresh.extend(chunks)
        stats.chunks = self._write_rows(copies) + self._write_chunks(fresh)
        return Fingerprints().add(rows).result(), stats

    # ---- re-embedding the live chunks ----
    def _write_rows(self, rows: list[dict[str, Any]]) -> int:
        for start in range(0, len(rows), TEXTS_PER_EMBED):
            part = rows[start:start + TEXTS_PER_EMBED]
            vectors = self.embedder.embed([str(r["text"]) for r in part], input_type="document")
            self.target.upsert_rows([{**r, "vector": vectors[i].tolist()} for i, r in enumerate(part)])
        return len(rows)

    # ---- chunking again from the source ----
    def _from_source(self, doc_id: str, rows: list[dict[str, Any]], stats: SyncStats) -> list[Chunk] | None:
        assert self.rechunk is not None
        path = self._source_file(doc_id)
        if path is None:
            stats.carried += 1
            return None
        try:
            parsed = parse_file(path, max_bytes=self.rechunk.max_file_bytes)
        except RagError as exc:
            stats.carried += 1
            stats.notes.append(f"{path}: kept the live chunks ({exc.message})")
            return None
        first = min(rows, key=lambda r: int(r.get("chunk_index", 0)))
        parsed.source_uri = str(first.get("source_uri") or path)
        meta = {k: v for k, v in dict(first.get("metadata") or {}).items() if k not in ENRICHED_KEYS}
        acl = Acl(str(first["owner_id"]), tuple(map(str, first.get("group_ids") or ())),
                  first["visibility"])
        chunker = Chunker(self.rechunk.chunk_size, self.rechunk.chunk_overlap)
        chunks = chunk_document(parsed, chunker, acl, doc_id=doc_id, extra_metadata=meta)
        stats.from_source += 1
        return chunks

    def _source_file(self, doc_id: str) -> Path | None:
        if self.db is None:
            return None
        with self.db.session() as s:
            record = s.get(DocumentRecord, doc_id)
            uri = record.source_uri if record is not None and record.source_type == "file" else None
        return Path(uri) if uri and Path(uri).is_file() else None

    def _write_chunks(self, chunks: list[Chunk]) -> int:
        if not chunks:
            return 0
        rows = [chunk_row(c, 0) for c in chunks]
        if self._enrich is not None:  # the labels the governance policy reads, for the new chunks
            rows = columns_to_rows(self._enrich(rows_to_columns(rows, CHUNK_COLUMNS)))
        labelled = [row_to_chunk(r) for r in rows]
        for start in range(0, len(labelled), TEXTS_PER_EMBED):
            part = labelled[start:start + TEXTS_PER_EMBED]
            self.target.upsert(part, self.embedder.embed([c.text for c in part], input_type="document"))
        return len(labelled)


def copy_fields(live_fields: Sequence[str], target_fields: Sequence[str]) -> list[str]:
    """Stored fields a re-embedded row carries over: those both schemas have, minus what the target derives."""
    wanted = set(target_fields) - DERIVED_FIELDS
    return [f for f in live_fields if f in wanted]


Progress = Callable[[int, int], None]  # (documents done, chunks written)


def apply_sync(plan: SyncPlan, materializer: Materializer, registry: IndexRegistry, target: str, *,
               progress: Progress | None = None, checkpoint: Callable[[], None] | None = None,
               batch_docs: int = DOCS_PER_BATCH) -> SyncStats:
    """Materialise ``plan`` into ``target``, recording each batch's document states as it lands (an interrupted sync
    resumes where it stopped)."""
    stats = SyncStats()
    for start in range(0, len(plan.removed), batch_docs):
        part = plan.removed[start:start + batch_docs]
        if checkpoint:
            checkpoint()
        materializer.target.delete_where(f"doc_id in {literal_list(part)}")
        registry.forget_docs(target, part)
        stats.removed += len(part)
        if progress:
            progress(len(part), 0)
    for start in range(0, len(plan.changed), batch_docs):
        part = plan.changed[start:start + batch_docs]
        if checkpoint:
            checkpoint()
        states, batch = materializer.materialize(part)
        registry.set_doc_states(target, states)
        gone = [d for d in part if d not in states]  # deleted from the live collection since the plan
        registry.forget_docs(target, gone)
        batch.removed += len(gone)
        stats.merge(batch)
        if progress:
            progress(len(part), batch.chunks)
    if plan.changed:
        materializer.target.seal_and_warm()  # before the gate's and users' searches reach it
    return stats
