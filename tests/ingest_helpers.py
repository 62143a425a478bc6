"""Shared helpers for ingest tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.ingest.executor import LocalExecutor, SharedModel
from rag_ray.ingest.file_ingest import FileIngestor
from rag_ray.ingest.stages import EmbedChunks, EnrichChunks, ParseAndChunk, WriteChunks
from rag_ray.metadata import MetadataDB
from rag_ray.store.milvus import ChunkStore


class LocalStages:
    """Stage factories sharing one store and embedder (in-process executor)."""

    def __init__(self, store: ChunkStore, embedder: object, chunk_size: int = 800, overlap: int = 100,
                 enrichment_level: str = "standard"):
        self.store, self.embedder, self.chunk_size, self.overlap = store, embedder, chunk_size, overlap
        self.enrichment_level = enrichment_level

    def parse(self) -> ParseAndChunk:
        return ParseAndChunk(self.chunk_size, self.overlap)

    def enrich(self, level: str | None = None) -> EnrichChunks:
        return EnrichChunks(level or self.enrichment_level)

    def embed(self) -> EmbedChunks:
        return EmbedChunks(lambda: self.embedder)  # type: ignore[arg-type,return-value]

    def write(self) -> WriteChunks:
        return WriteChunks(lambda: self.store)

    def shared_model(self) -> SharedModel | None:
        return None  # this process's own embedder: nothing another job could share


def local_ingestor(db: MetadataDB, store: ChunkStore, embedder: object | None = None,
                   roots: list[Path] | None = None) -> FileIngestor:
    stages = LocalStages(store, embedder or FakeEmbedder())
    return FileIngestor(db, store, LocalExecutor(batch_size=32), stages, allowed_roots=roots)


def copy_documents(shared_data: Path, target: Path) -> Path:
    docs = target / "docs"
    shutil.copytree(shared_data / "documents", docs, ignore=shutil.ignore_patterns("SOURCE.md"))
    return docs
