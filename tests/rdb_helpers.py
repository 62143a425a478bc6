"""Shared helpers for RDB tests: Chinook copies, in-process ingestors, expected id sets."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.ingest.executor import Executor, LocalExecutor
from rag_ray.ingest.rdb_sync import RdbIngestor, RdbSyncRequest
from rag_ray.metadata import MetadataDB
from rag_ray.store.milvus import ChunkStore
from tests.ingest_helpers import LocalStages

CHINOOK = "chinook"
E2E_TABLES = ("Album", "Artist", "Customer", "Track")


def chinook_sqlite(shared_data: Path, target: Path) -> Path:
    path = target / "chinook.sqlite"
    shutil.copy(shared_data / CHINOOK / "Chinook_Sqlite.sqlite", path)
    path.chmod(0o644)  # the shared copy is read-only
    return path


def ingestor(db: MetadataDB, store: ChunkStore, embedder: Any = None, executor: Executor | None = None
             ) -> RdbIngestor:
    stages = LocalStages(store, embedder or FakeEmbedder())
    return RdbIngestor(db, store, executor or LocalExecutor(batch_size=256), stages)


def store_ids(store: ChunkStore, expr: str = "") -> set[str]:
    return store.ids_where(expr)


def reference_ids(milvus_uri: str, tmp: Path, request: RdbSyncRequest, embedder: Any = None) -> set[str]:
    """The chunk ids a from-scratch full sync of the database's current state produces."""
    embedder = embedder or FakeEmbedder()
    store = ChunkStore.connect(milvus_uri, f"ref_{uuid.uuid4().hex[:10]}", embedder.dimension)
    db = MetadataDB(f"sqlite:///{tmp / f'ref-{uuid.uuid4().hex[:6]}.sqlite'}")
    try:
        fresh = RdbSyncRequest(**{**request.__dict__, "mode": "full"})
        summary = ingestor(db, store, embedder).run(fresh)
        assert summary.status == "succeeded", summary.errors
        return store.ids_where("")
    finally:
        store.drop()
        db.dispose()


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def api_client(settings: Any, db: MetadataDB, store: ChunkStore) -> TestClient:
    from rag_ray.api.app import create_app
    from rag_ray.testing.auth import StaticAuthenticator
    from rag_ray.types import Principal
    from tests.api_helpers import compose

    tokens = {"admin-token": Principal("u-admin", "admin", "admin"), "alice-token": Principal("u-alice", "alice")}
    return TestClient(create_app(compose(settings, auth=StaticAuthenticator(tokens), db=db, store=store)))


def wait_job(db: MetadataDB, job_id: str, timeout_s: float = 120) -> Any:
    import time

    from rag_ray.ingest.tracking import JobStore

    deadline = time.monotonic() + timeout_s
    jobs = JobStore(db)
    while time.monotonic() < deadline:
        job = jobs.get(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)  # the job runs in a background thread; its record is the only signal
    raise AssertionError(f"job {job_id} did not finish: {jobs.get(job_id)}")
