"""Build the FastAPI app in-process (no Ray) with real SQLite, real Milvus Lite and fake models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from rag_ray.api.app import create_app
from rag_ray.api.services import Services
from rag_ray.config import Settings
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.enrich.policy import GovernancePolicy
from rag_ray.ingest.executor import LocalExecutor
from rag_ray.ingest.file_ingest import FileIngestor, FileIngestRequest
from rag_ray.ingest.file_jobs import FileJobService, thread_launcher
from rag_ray.ingest.notify import callback_listeners
from rag_ray.ingest.tracking import JobStore
from rag_ray.llm.fake import FakeLLM
from rag_ray.metadata import MetadataDB
from rag_ray.providers.manager import LLMEntry, LLMManager
from rag_ray.retrieval.service import RetrievalService, ThreadedEmbedder
from rag_ray.store.milvus import ChunkStore
from rag_ray.testing.auth import StaticAuthenticator
from rag_ray.types import Principal
from tests.ingest_helpers import LocalStages

ADMIN = Principal("u-admin", "admin", "admin")
ALICE = Principal("u-alice", "alice", "user", ("g-team",))
BOB = Principal("u-bob", "bob", "user")
TOKENS = {"admin-token": ADMIN, "alice-token": ALICE, "bob-token": BOB}


@dataclass
class ApiRig:
    client: TestClient
    settings: Settings
    db: MetadataDB
    store: ChunkStore
    embedder: Any

    def auth(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {who}-token"}


def local_runner(db: MetadataDB, store: ChunkStore, embedder: Any):  # type: ignore[no-untyped-def]
    def run(settings: Settings, request: FileIngestRequest, job_id: str, confine: bool) -> None:
        roots = settings.resolved_allowed_roots if confine else None
        ingestor = FileIngestor(db, store, LocalExecutor(batch_size=16), LocalStages(store, embedder),
                                allowed_roots=roots)
        with callback_listeners(settings, request) as listeners:
            ingestor.run(request, job_id=job_id, listeners=listeners)

    return run


def build_rig(settings: Settings, store: ChunkStore, embedder: Any = None, llm: Any = None,
              policy: GovernancePolicy | None = None) -> ApiRig:
    """``policy``: the governance policy retrieval enforces (None: ACL only, as before)."""
    embedder = embedder or FakeEmbedder()
    db = MetadataDB(settings.metadata_url)
    threaded = ThreadedEmbedder(embedder)
    manager = LLMManager([LLMEntry.of(llm or FakeLLM())])
    jobs = FileJobService(settings, db, store, local_runner(db, store, embedder), launcher=thread_launcher)
    services = Services(settings=settings, auth=StaticAuthenticator(TOKENS), embedder=threaded, llm=manager,
                        retrieval=RetrievalService(store, threaded, policy=policy), jobs=JobStore(db),
                        features={"metadata_db": db, "store": store, "file_jobs": jobs})
    return ApiRig(TestClient(create_app(services)), settings, db, store, embedder)


def inbox(settings: Settings) -> Path:
    path = settings.resolved_allowed_roots[0]
    path.mkdir(parents=True, exist_ok=True)
    return path
