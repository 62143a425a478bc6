"""Ingest stages as plain callables. The Ray Data job maps them over datasets; tests call them directly.

parse+chunk (one task per file) → enrich (labels into chunk metadata, cheap tasks) → embed (actor pool, batched)
→ write (batched Milvus upserts).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag_ray.embedding.base import BatchedEmbedder, Embedder
from rag_ray.enrich import ENRICHMENT_LEVELS, Enricher, SensitivityRules
from rag_ray.errors import InvalidInput, RagError
from rag_ray.ingest.batching import AdaptiveBatcher, BatchPolicy
from rag_ray.ingest.rows import (
    CHUNK_COLUMNS,
    KIND_CHUNK,
    KIND_EMPTY,
    KIND_ERROR,
    chunk_row,
    columns_to_rows,
    marker_row,
    row_to_chunk,
)
from rag_ray.sources.files import parse_file
from rag_ray.store.milvus import ChunkStore
from rag_ray.text.chunking import Chunker
from rag_ray.types import Acl, Chunk, ParsedDocument, make_chunk_id, sha256_text

RESULT_COLUMNS = ("kind", "id", "doc_id", "source_uri", "n_chunks", "error", "embed_batch_size")
ENRICHMENT_OFF = "off"
STAGE_LEVELS: tuple[str, ...] = (ENRICHMENT_OFF, *ENRICHMENT_LEVELS)


def check_enrichment_level(level: str) -> str:
    if level not in STAGE_LEVELS:
        raise InvalidInput(f"enrichment_level must be one of {', '.join(STAGE_LEVELS)}", field="enrichment_level")
    return level


def chunk_document(doc: ParsedDocument, chunker: Chunker, acl: Acl, doc_id: str | None = None,
                   extra_metadata: dict[str, Any] | None = None) -> list[Chunk]:
    """Split one parsed document into chunks with deterministic ids and the document's ACL."""
    doc_id = doc_id or doc.doc_id
    base_meta = {**doc.metadata, **(extra_metadata or {})}
    chunks = []
    for index, text in enumerate(chunker.split(doc.text)):
        content_hash = sha256_text(text)
        chunks.append(Chunk(chunk_id=make_chunk_id(doc_id, index, content_hash), doc_id=doc_id,
                            source_uri=doc.source_uri, chunk_index=index, text=text, content_hash=content_hash,
                            metadata=dict(base_meta), acl=acl))
    return chunks


class ParseAndChunk:
    """File task row → chunk rows (or one marker row when the file is empty or broken)."""

    def __init__(self, chunk_size: int, chunk_overlap: int, max_file_bytes: int | None = None):
        self.chunker = Chunker(chunk_size, chunk_overlap)
        self.max_file_bytes = max_file_bytes

    def __call__(self, task: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            doc = parse_file(Path(task["path"]), max_bytes=self.max_file_bytes)
        except RagError as exc:
            return [marker_row(KIND_ERROR, task, error=exc.message)]
        except Exception as exc:  # a parser bug must not kill the job: record it against the file
            return [marker_row(KIND_ERROR, task, error=f"{type(exc).__name__}: {exc}")]
        acl = Acl(task.get("owner_id", "system"), tuple(json.loads(task.get("group_ids_json", "[]"))),
                  task.get("visibility", "private"))
        extra = {"source_type": "file", **json.loads(task.get("metadata_json", "{}") or "{}")}
        doc.source_uri = task["source_uri"]
        chunks = chunk_document(doc, self.chunker, acl, doc_id=task["doc_id"], extra_metadata=extra)
        if not chunks:
            return [marker_row(KIND_EMPTY, task, metadata=doc.metadata)]
        return [chunk_row(c, len(chunks)) for c in chunks]


class EnrichChunks:
    """Merges language / PII / sensitivity labels into each chunk row's ``metadata_json`` (``off``: unchanged).

    Plain CPU work, no model: Ray Data runs it as cheap tasks between parsing and embedding. The ``sensitivity``
    label becomes the chunk's scalar ``sensitivity`` field when written (``ChunkStore`` reads it from metadata).
    """

    def __init__(self, level: str = "standard", rules: SensitivityRules | None = None):
        self.level = check_enrichment_level(level)
        self.enricher = None if level == ENRICHMENT_OFF else Enricher(level, rules)  # type: ignore[arg-type]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.enricher is None or not len(batch.get("text", ())):
            return batch
        return self.enricher.enrich_batch(batch)


class EmbedChunks:
    """Adds a ``vector`` column (and the ``embed_batch_size`` it was encoded at) to a batch of chunk rows. Built
    once per actor (model load is costly). ``adapt`` lets an ``AdaptiveBatcher`` choose the model's batch size."""

    def __init__(self, embedder_factory: Callable[[], Embedder]):
        self.embedder = embedder_factory()
        self.batcher: AdaptiveBatcher | None = None

    def adapt(self, policy: BatchPolicy) -> EmbedChunks:
        """Encode in batches of the policy's size (adapted to throughput and memory when it says so)."""
        if isinstance(self.embedder, BatchedEmbedder):
            self.embedder.batch_size = policy.size
            self.batcher = policy.batcher()
        return self

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        kinds = list(batch["kind"])
        rows = [i for i, k in enumerate(kinds) if k == KIND_CHUNK]
        texts = [str(batch["text"][i]) for i in rows]
        vectors, sizes = self._encode(texts) if texts else (np.zeros((0, 0), np.float32), [])
        dim = vectors.shape[1] if len(texts) else self.embedder.dimension
        out = np.zeros((len(kinds), dim), dtype=np.float32)
        used = np.full(len(kinds), self.batch_size, dtype=np.int64)
        if rows:
            out[rows] = vectors
            used[rows] = sizes
        batch["vector"] = list(out)
        batch["embed_batch_size"] = used
        return batch

    @property
    def batch_size(self) -> int:
        """The model's batch size now (0: the embedder sizes its own requests)."""
        return self.embedder.batch_size if isinstance(self.embedder, BatchedEmbedder) else 0

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Vectors of ``texts`` and the batch size each was encoded at."""
        if self.batcher is None:
            return self.embedder.embed(texts, input_type="document"), [self.batch_size] * len(texts)
        parts = self.batcher.map(texts, self._encode_at_size)
        return np.concatenate([v for v, _ in parts]), [size for v, size in parts for _ in range(len(v))]

    def _encode_at_size(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        assert self.batcher is not None and isinstance(self.embedder, BatchedEmbedder)
        self.embedder.batch_size = size = self.batcher.size  # one forward pass per slice
        return self.embedder.embed(texts, input_type="document"), size


class WriteChunks:
    """Upserts a batch of embedded chunk rows; returns slim result rows for progress and the manifest."""

    def __init__(self, store_factory: Callable[[], ChunkStore]):
        self.store = store_factory()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows = columns_to_rows(batch)
        chunk_rows = [r for r in rows if r["kind"] == KIND_CHUNK]
        if chunk_rows:
            chunks = [row_to_chunk(r) for r in chunk_rows]
            self.store.upsert(chunks, np.asarray([r["vector"] for r in chunk_rows], dtype=np.float32))
        return {c: [r.get(c) for r in rows] for c in RESULT_COLUMNS}


__all__ = ["CHUNK_COLUMNS", "ENRICHMENT_OFF", "KIND_CHUNK", "KIND_EMPTY", "KIND_ERROR", "RESULT_COLUMNS",
           "STAGE_LEVELS", "EmbedChunks", "EnrichChunks", "ParseAndChunk", "WriteChunks", "check_enrichment_level",
           "chunk_document"]
