"""What the HTTP routes need: one typed container, built by ``rag_ray.server.compose.build_services``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rag_ray.access.service import AuthService
from rag_ray.answers.service import AnswerService
from rag_ray.audit import AuditLog
from rag_ray.config import Settings
from rag_ray.conversations.service import ConversationService
from rag_ray.embedding.base import AsyncEmbedder
from rag_ray.generation import GenerationService
from rag_ray.generation.rag import RagPipeline
from rag_ray.guard.service import GuardService
from rag_ray.index.lifecycle import IndexService
from rag_ray.ingest.file_jobs import FileJobService
from rag_ray.ingest.rdb_jobs import RdbJobService
from rag_ray.ingest.tracking import JobStore
from rag_ray.metadata import MetadataDB
from rag_ray.providers.embeddings import EmbeddingService
from rag_ray.providers.manager import LLMManager
from rag_ray.retrieval.service import RetrievalService
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Principal


class Authenticator(Protocol):
    def authenticate(self, token: str) -> Principal:
        """Validate a bearer token (JWT or API key) → the caller; raise AuthenticationError. May block (DB)."""
        ...

    def known(self, token: str) -> Principal | None:
        """The caller of a token verified recently, without I/O (safe on the event loop); None: ``authenticate``."""
        ...


@dataclass(frozen=True)
class Services:
    settings: Settings
    auth: Authenticator  # bearer tokens (JWT or API key) → the caller
    accounts: AuthService  # login, refresh, logout over the metadata DB
    guard: GuardService  # requests-per-period limits, LLM token/cost budgets, usage (per user, key, group)
    audit: AuditLog  # the append-only audit log
    db: MetadataDB
    store: ChunkStore
    embedder: AsyncEmbedder  # the collection's embedder: ingest and retrieval
    embeddings: EmbeddingService  # /embeddings and /v1/embeddings: every configured embedding provider
    llm: LLMManager  # every LLM call goes through the manager (strategies, retries, breakers, fallback)
    retrieval: RetrievalService
    generation: GenerationService
    rag: RagPipeline  # retrieve → fit to the model's window → prompt → generate → mask → cite, for every RAG route
    jobs: JobStore
    file_jobs: FileJobService
    rdb_jobs: RdbJobService
    index: IndexService  # the collections behind the RAG_COLLECTION alias: rebuild, gate, switch, rollback
    conversations: ConversationService  # per-user history; follow-ups made self-contained before retrieval
    answers: AnswerService  # answer records, feedback, and the provider quality estimate the ``quality`` strategy reads
