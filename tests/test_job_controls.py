"""Jobs obey their controls, observed through their counters, the embedder's calls and the vector store.

The embedder is a double behind a turnstile (``rag_ray.testing.gates``): the test decides how many embedding calls
go through, so a job is paused or cancelled at a known point. In-process (``LocalPlatform``: the driver runs the
stages) through HTTP on the assembled server; on Ray (``RayPlatform``: a Ray task driving a Ray Data pipeline) the
gate is an OpenAI-compatible embedding server the Ray workers call.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from deployments.platform import RayPlatform
from rag_ray.api.app import create_app
from rag_ray.api.services import Services
from rag_ray.config import Settings
from rag_ray.embedding import create_embedder
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.ingest.stages import ParseAndChunk
from rag_ray.ingest.tracking import JobStore, JobTracker
from rag_ray.metadata import MetadataDB
from rag_ray.server.backends import LocalBackends
from rag_ray.server.compose import build_services
from rag_ray.store.milvus import ChunkStore
from rag_ray.testing.auth import StaticAuthenticator
from rag_ray.testing.gates import GatedEmbedder, GatedEmbeddingServer, Turnstile
from rag_ray.types import make_doc_id
from tests.api_helpers import TOKENS, build_rig, compose, inbox
from tests.job_helpers import wait_until

COUNTERS = ("items_total", "items_done", "chunks_done", "errors_count")


@dataclass
class Rig:
    client: TestClient
    settings: Settings
    store: ChunkStore
    gate: Turnstile
    platform: Any = None

    def auth(self) -> dict[str, str]:
        return {"Authorization": "Bearer admin-token"}

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.client.get(f"/jobs/{job_id}", headers=self.auth())
        assert r.status_code == 200, r.text
        return dict(r.json())

    def control(self, job_id: str, action: str) -> dict[str, Any]:
        r = self.client.post(f"/jobs/{job_id}/{action}", headers=self.auth())
        assert r.status_code == 200, r.text
        return dict(r.json())

    def ingest(self, directory: Path) -> str:
        r = self.client.post("/extract/filesystem", headers=self.auth(), json={"directory": str(directory)})
        assert r.status_code == 202, r.text
        return str(r.json()["job_id"])

    def finished(self, job_id: str, timeout_s: float = 300) -> dict[str, Any]:
        return dict(wait_until(lambda: (j := self.job(job_id))["finished_at"] and j, timeout_s=timeout_s,
                               what=f"job {job_id} to end"))

    def chunks_per_file(self) -> Counter[str]:
        rows = self.store.query("", ("doc_id", "source_uri"))
        return Counter(Path(r["source_uri"]).name for r in rows)

    def manifest(self) -> dict[str, int]:
        r = self.client.get("/documents", params={"limit": 500}, headers=self.auth())
        return {Path(d["source"]).name: d["chunks"] for d in r.json()["documents"]}


def write_docs(directory: Path, n_files: int) -> list[Path]:
    """Files of about 40 chunks each (chunk_size 200): one embedding batch holds parts of two documents."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        sentences = [f"Document {i} paragraph {j} talks about topic {i * 100 + j} and nothing else at all."
                     for j in range(110)]
        path = directory / f"doc{i:02d}.txt"
        path.write_text(" ".join(sentences))
        paths.append(path)
    return paths


def expected_chunks(settings: Settings, paths: list[Path]) -> dict[str, int]:
    parse = ParseAndChunk(settings.chunk_size, settings.chunk_overlap)
    return {p.name: int(parse({"path": str(p), "doc_id": make_doc_id(str(p)), "source_uri": str(p)})[0]["n_chunks"])
            for p in paths}


def quiet(rig: Rig, job_id: str, *, rounds: int = 4, every_s: float = 0.5) -> tuple[Any, ...]:
    """Observe the job's counters, the embedder's calls and the store until ``rounds`` observations in a row agree
    (each spaced wider than the 0.2 s control poll); returns that observation."""
    last: tuple[Any, ...] | None = None
    same = 0
    deadline = time.monotonic() + 120
    while same < rounds:
        assert time.monotonic() < deadline, f"the paused job kept working: {last}"
        job = rig.job(job_id)
        now = (tuple(job[k] for k in COUNTERS), rig.gate.snapshot(), rig.store.count(), job["status"])
        same = same + 1 if now == last else 1
        last = now
        time.sleep(every_s)  # spacing between observations, not an assertion on time
    assert last is not None
    return last


def assert_whole_documents(rig: Rig, expected: dict[str, int]) -> dict[str, int]:
    """Every document has all its chunks in Milvus and a manifest row saying so, or no chunk and no row."""
    stored, manifest = rig.chunks_per_file(), rig.manifest()
    for name, n in expected.items():
        assert stored.get(name, 0) in (0, n), (name, stored.get(name), n)
        assert manifest.get(name, 0) == stored.get(name, 0), (name, manifest.get(name), stored.get(name))
    return manifest


# ---- in-process: the driver runs the stages (LocalPlatform) ----
@pytest.fixture
def local_rig(make_settings, fake_store) -> Iterator[Rig]:  # type: ignore[no-untyped-def]
    gate = Turnstile()
    embedder = GatedEmbedder(FakeEmbedder(), gate)
    api = build_rig(make_settings(chunk_size=200, chunk_overlap=0), fake_store, embedder=embedder)
    try:
        yield Rig(api.client, api.settings, fake_store, gate)
    finally:
        gate.open()


def test_pause_stops_new_files_and_batches_and_resume_ingests_each_file_once(local_rig: Rig):
    rig = local_rig
    paths = write_docs(inbox(rig.settings) / "docs", 6)
    expected = expected_chunks(rig.settings, paths)
    job_id = rig.ingest(paths[0].parent)
    rig.gate.allow(2)
    rig.gate.wait_for(entered=3)  # two batches written, the third held in the embedder
    assert rig.control(job_id, "pause")["status"] == "paused"
    rig.gate.open()  # nothing holds the job back now but its pause

    counters, (entered, passed, _), stored, status = quiet(rig, job_id)
    assert status == "paused" and (entered, passed) == (3, 3)  # the batch in hand finished, no new one started
    assert stored == counters[2] > 0 and counters[1] < len(paths)  # two batches written and counted; the third
    # waits for the resume before its write

    assert rig.control(job_id, "resume")["status"] == "running"
    job = rig.finished(job_id)
    assert job["status"] == "succeeded", job
    assert job["items_done"] == job["items_total"] == len(paths) and job["chunks_done"] == sum(expected.values())
    assert rig.gate.items == sum(expected.values())  # every chunk embedded once: no file parsed twice
    assert rig.chunks_per_file() == Counter(expected) and assert_whole_documents(rig, expected) == expected


def test_cancel_keeps_every_document_whole_or_absent(local_rig: Rig):
    rig = local_rig
    paths = write_docs(inbox(rig.settings) / "docs", 6)
    expected = expected_chunks(rig.settings, paths)
    job_id = rig.ingest(paths[0].parent)
    rig.gate.allow(2)
    rig.gate.wait_for(entered=3)
    stored = rig.chunks_per_file()
    partial = [name for name, n in stored.items() if n < expected[name]]
    assert partial  # a document cut between two batches

    assert rig.control(job_id, "cancel")["status"] == "cancelled"
    rig.gate.open()
    job = rig.finished(job_id)
    assert job["status"] == "cancelled" and job["items_done"] < job["items_total"]
    assert rig.gate.entered == 3  # no embedding started after the cancel
    manifest = assert_whole_documents(rig, expected)
    assert all(manifest.get(name, 0) == 0 for name in partial)  # the cut document was removed
    assert sorted(manifest) == sorted(n for n in stored if n not in partial) and manifest  # finished ones kept
    assert job["items_done"] == len(manifest)


def test_cancelling_a_paused_job_ends_it_without_another_batch(local_rig: Rig):
    rig = local_rig
    paths = write_docs(inbox(rig.settings) / "docs", 4)
    expected = expected_chunks(rig.settings, paths)
    job_id = rig.ingest(paths[0].parent)
    rig.gate.wait_for(entered=1)
    rig.control(job_id, "pause")
    rig.gate.open()
    quiet(rig, job_id, rounds=2)  # parked
    assert rig.control(job_id, "cancel")["status"] == "cancelled"
    job = rig.finished(job_id)  # the parked stages wake, skip the rest, the driver settles
    assert job["status"] == "cancelled" and rig.gate.entered == 1 and rig.store.count() == 0
    assert assert_whole_documents(rig, expected) == {}


def test_a_job_paused_before_its_driver_starts_stays_paused(make_settings):
    jobs = JobStore(MetadataDB(make_settings().metadata_url))
    job_id = jobs.create("files", {}, created_by="alice")
    assert jobs.admit([job_id]).admitted == [job_id]
    jobs.pause(job_id)  # admitted, its driver not yet at work
    JobTracker(jobs, job_id).start(3)  # was a conflict that failed the job
    assert jobs.status(job_id) == "paused"
    jobs.resume(job_id)
    assert jobs.status(job_id) == "running"


# ---- database sync (/extract/rdb) in-process ----
@pytest.fixture
def rdb_rig(make_settings, fake_store, tmp_path: Path, shared_data: Path) -> Iterator[Rig]:  # type: ignore[no-untyped-def]
    """Chinook's Album table (347 rows) as a named source; chunk_size 50: most rows make two chunks."""
    from rag_ray.sources.rdb.config import DatabaseConfig
    from rag_ray.sources.rdb.state import NamedSource, add_source
    from rag_ray.types import Acl
    from tests.rdb_helpers import chinook_sqlite

    gate = Turnstile()
    settings = make_settings(chunk_size=50, chunk_overlap=0)
    db = MetadataDB(settings.metadata_url)
    source = DatabaseConfig.from_url(f"sqlite:///{chinook_sqlite(shared_data, tmp_path)}")
    add_source(db, settings.jwt_secret(), NamedSource("chinook", source, Acl("system", (), "public"),
                                                      {"include_tables": ["Album"], "batch_size": 100}))
    services = compose(settings, embedder=GatedEmbedder(FakeEmbedder(), gate), db=db, store=fake_store)
    try:
        yield Rig(TestClient(create_app(services)), settings, fake_store, gate)
    finally:
        gate.open()


ROWS = 347


def sync_rdb(rig: Rig) -> str:
    r = rig.client.post("/extract/rdb", headers=rig.auth(), json={"source": "chinook"})
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def chunks_per_row(rig: Rig) -> Counter[str]:
    return Counter(r["doc_id"] for r in rig.store.query("", ("doc_id",)))


def test_rdb_sync_pauses_and_resumes_without_reading_a_row_twice(rdb_rig: Rig):
    rig = rdb_rig
    job_id = sync_rdb(rig)
    rig.gate.wait_for(entered=1)
    assert rig.control(job_id, "pause")["status"] == "paused"
    rig.gate.open()
    counters, (entered, *_), stored, status = quiet(rig, job_id)
    assert status == "paused" and entered == 1 and stored == counters[2] and counters[1] < ROWS

    rig.control(job_id, "resume")
    job = rig.finished(job_id)
    assert job["status"] == "succeeded" and job["items_done"] == ROWS, job
    assert rig.gate.items == job["chunks_done"] == rig.store.count()  # every chunk embedded once


def test_rdb_sync_cancel_keeps_every_row_whole_and_the_next_sync_completes_it(rdb_rig: Rig):
    rig = rdb_rig
    job_id = sync_rdb(rig)
    rig.gate.allow(1)
    rig.gate.wait_for(entered=2)  # the first batch written, the second held
    before = chunks_per_row(rig)
    assert rig.control(job_id, "cancel")["status"] == "cancelled"
    rig.gate.open()
    job = rig.finished(job_id)
    assert job["status"] == "cancelled" and 0 < job["items_done"] < ROWS

    after = chunks_per_row(rig)
    manifest = {d["doc_id"]: d["chunks"] for d in rig.client.get("/documents", params={"limit": 500},
                                                                  headers=rig.auth()).json()["documents"]}
    assert dict(after) == manifest and len(manifest) == job["items_done"]  # recorded rows have all their chunks

    again = rig.finished(sync_rdb(rig))  # no watermark moved: the next sync writes the rest, the cut row too
    assert again["status"] == "succeeded" and again["items_done"] == ROWS - len(manifest)
    final = chunks_per_row(rig)
    assert len(final) == ROWS and all(final[d] == n for d, n in after.items())
    cut = [d for d, n in before.items() if n < final[d]]
    assert cut and all(d not in after for d in cut)  # the row cut between two batches had been removed


# ---- on Ray: a Ray task drives a Ray Data pipeline (RayPlatform) ----
class RecordingRayPlatform(RayPlatform):
    """``RayPlatform`` that keeps the object refs of the driver tasks it launches (as ``RayPlatform.launch``)."""

    def __init__(self) -> None:
        self.launched: list[Any] = []

    def launch(self, fn: Any, *args: Any) -> None:
        import ray

        self.launched.append(ray.remote(num_cpus=0, max_retries=0)(fn).remote(*args))


@pytest.fixture
def ray_rig(make_settings, ray_local) -> Iterator[Rig]:  # type: ignore[no-untyped-def]
    gate = Turnstile()
    server = GatedEmbeddingServer(gate, dimensions=1536).start()
    settings = make_settings(embedding_provider="openai", embedding_model="text-embedding-3-small",
                             embedding_base_url=server.base_url, embedding_api_key="test-key", chunk_size=200,
                             chunk_overlap=0, jobs_local_max_files=0)  # every job takes the Ray Data path
    platform = RecordingRayPlatform()
    backends = LocalBackends(settings, embedder=create_embedder(settings), platform=platform)
    services: Services = asyncio.run(build_services(settings, backends, auth=StaticAuthenticator(TOKENS)))
    try:
        yield Rig(TestClient(create_app(services)), settings, services.store, gate, platform)
    finally:
        gate.open()
        server.stop()
        services.store.drop()


def pipeline_left(platform: Any) -> list[str]:
    """The job's Ray Data actors still alive and its driver task if still running (the state API needs the
    dashboard, which the test Ray does not start: actors from the GCS table, the driver from its object ref)."""
    import ray
    from ray._private import state

    actors = [a["ActorClassName"] for a in state.actors(actor_state_name="ALIVE").values()
              if "MapWorker" in a["ActorClassName"]]
    drivers = [f"driver task {ref}" for ref in platform.launched if not ray.wait([ref], timeout=0)[0]]
    return actors + drivers


@pytest.mark.slow  # a Ray Data pipeline on the shared 2-core machine
def test_ray_data_job_pauses_its_workers_and_resumes_where_it_stopped(ray_rig: Rig):
    rig = ray_rig
    paths = write_docs(inbox(rig.settings) / "docs", 12)
    expected = expected_chunks(rig.settings, paths)
    job_id = rig.ingest(paths[0].parent)
    rig.gate.wait_for(entered=1, timeout_s=300)  # files parsed, the first embedding request held
    assert rig.control(job_id, "pause")["status"] == "paused"
    rig.gate.open()

    counters, (_, _, embedded), _stored, status = quiet(rig, job_id)
    assert status == "paused" and embedded < sum(expected.values())  # the actors stopped before the end

    assert rig.control(job_id, "resume")["status"] == "running"
    job = rig.finished(job_id)
    assert job["status"] == "succeeded", job
    assert job["items_done"] == len(paths) and job["chunks_done"] == sum(expected.values())
    assert job["chunks_done"] >= counters[2]  # counters continued from where they were
    assert rig.gate.items == sum(expected.values())  # every chunk embedded once: no file parsed twice
    assert rig.chunks_per_file() == Counter(expected) and assert_whole_documents(rig, expected) == expected


@pytest.mark.slow
def test_ray_data_job_cancel_stops_its_tasks_and_actors_and_keeps_documents_whole(ray_rig: Rig):
    rig = ray_rig
    paths = write_docs(inbox(rig.settings) / "docs", 16)
    expected = expected_chunks(rig.settings, paths)
    job_id = rig.ingest(paths[0].parent)
    while rig.gate.items < sum(expected.values()) / 2:  # embedding requests one by one, half of the chunks
        assert not (job := rig.job(job_id))["finished_at"], job
        rig.gate.allow(1)
        rig.gate.wait_for(passed=rig.gate.passed + 1, timeout_s=300)
    rig.gate.wait_for(entered=rig.gate.passed + 1, timeout_s=300)  # the next request is held
    assert rig.control(job_id, "cancel")["status"] == "cancelled"
    rig.gate.open()

    job = rig.finished(job_id)
    assert job["status"] == "cancelled" and job["items_done"] < len(paths)
    try:
        wait_until(lambda: not pipeline_left(rig.platform), timeout_s=120, what="the job's actors and tasks to end")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {pipeline_left(rig.platform)}") from None
    assert rig.gate.items < sum(expected.values())
    manifest = assert_whole_documents(rig, expected)  # what the writer had written before the cancel, whole
    assert len(manifest) == job["items_done"] < len(paths)
