"""Bounded jobs: an overall deadline (the job is stopped and failed with the reason), connect timeouts (an
unreachable store or source database fails the job with the reason instead of hanging it), bounded Ray Data logs
and the small-job path. Real SQLite, Milvus Lite and PostgreSQL's driver against a silent TCP server; no Ray."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.ingest_files import run_file_job
from jobs.ray_executor import PoolPlan, RayDataExecutor
from jobs.ray_logging import CONFIG_PATH, RotatingSessionFileHandler, render_data_logging_config
from jobs.sync_rdb import run_rdb_job
from rag_ray.config import Settings
from rag_ray.errors import RagError, SourceError
from rag_ray.ingest.file_ingest import FileIngestRequest
from rag_ray.ingest.rdb_sync import RdbSyncRequest
from rag_ray.ingest.tracking import JobLimits, JobStore
from rag_ray.metadata import MetadataDB
from rag_ray.sources.rdb.config import DatabaseConfig
from rag_ray.store.lite_server import free_port
from tests.api_helpers import build_rig
from tests.job_helpers import GateEmbedder, wait_until


def test_a_job_past_its_deadline_is_stopped_and_failed_with_the_reason(make_settings, fake_store):
    embedder = GateEmbedder()  # never opened: the job would run forever
    rig = build_rig(make_settings(jobs_timeout_s=1), fake_store, embedder=embedder)
    try:
        r = rig.client.post("/documents/upload", headers=rig.auth("alice"), files={"file": ("a.txt", b"words " * 50)})
        job_id = r.json()["job_id"]
        running = wait_until(lambda: (j := rig.client.get(f"/jobs/{job_id}", headers=rig.auth()).json())["status"]
                             != "queued" and j, what="the job to start")
        assert running["deadline_at"] or running["status"] == "failed"

        def ended() -> dict | None:  # type: ignore[type-arg]
            body = rig.client.get(f"/jobs/{job_id}", headers=rig.auth()).json()
            return body if body["finished_at"] else None

        job = wait_until(ended, what="the timed-out job's driver to stop")  # interrupted: the gate never opened
        assert job["status"] == "failed" and "timed out" in job["message"] and "RAG_JOBS_TIMEOUT_S" in job["message"]
        assert embedder.calls >= 1 and not embedder.gate.is_set()
        # its slot is free again: the next job is admitted at once
        r = rig.client.post("/documents/upload", headers=rig.auth("alice"), files={"file": ("b.txt", b"more " * 50)})
        assert rig.client.get(f"/jobs/{r.json()['job_id']}", headers=rig.auth()).json()["status"] != "queued"
    finally:
        embedder.gate.set()


def test_an_unreachable_vector_store_fails_the_job_at_once_with_the_reason(make_settings, tmp_path: Path):
    port = free_port()  # nothing listens there
    settings = make_settings(milvus_uri=f"http://127.0.0.1:{port}", jobs_connect_timeout_s=2)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("hello")
    jobs = JobStore(MetadataDB(settings.metadata_url))
    job_id = jobs.create("files", {}, created_by="alice")
    with pytest.raises(SourceError, match="cannot reach the vector store"):
        run_file_job(settings, FileIngestRequest(path=docs), job_id)
    job = jobs.get(job_id)
    assert job.status == "failed" and job.finished_at
    assert f"127.0.0.1:{port}" in job.message and "RAG_JOBS_CONNECT_TIMEOUT_S" in job.message


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never says a word (a database behind a broken proxy or firewall)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_a_source_database_that_never_answers_fails_the_job_with_the_reason(make_settings, fake_store, silent_server):
    settings = make_settings(rdb_connect_timeout_s=2)
    database = DatabaseConfig(database_type="postgresql", host="127.0.0.1", port=silent_server, database="crm",
                              user="reader")
    jobs = JobStore(MetadataDB(settings.metadata_url))
    job_id = jobs.create("rdb", {}, created_by="admin")
    try:
        summary = run_rdb_job(settings, RdbSyncRequest(database=database, source_name="crm"), job_id, use_ray=False)
        assert summary.status == "failed"
    except RagError:
        pass  # the driver may also raise it; the record is what counts
    except Exception as exc:  # a driver error: the job record carries the reason
        assert "timeout" in str(exc).lower()
    job = jobs.get(job_id)
    assert job.status == "failed" and job.finished_at and "timeout" in job.message.lower(), job.message


def test_job_limits_come_from_the_settings(make_settings):
    limits = JobLimits.from_settings(make_settings(jobs_max_concurrent=3, jobs_max_per_user=2, jobs_timeout_s=60))
    assert (limits.max_concurrent, limits.max_per_user, limits.timeout_s) == (3, 2, 60)
    assert "60 s" in limits.timeout_message()


def test_small_file_jobs_run_in_the_driver_and_others_on_ray_data():
    executor = RayDataExecutor(local_max_files=2)
    assert executor.runs_locally([{"path": "/a"}, {"path": "/b"}])
    assert not executor.runs_locally([{"table": "t", "lower": 1}])  # database partitions
    assert not RayDataExecutor(local_max_files=0).runs_locally([{"path": "/a"}])


def test_file_jobs_a_pipeline_could_not_spread_run_in_the_driver(tmp_path):
    """More files than ``local_max_files``, but text for one embedding input (one actor): the driver runs it."""
    def files(name: str, count: int, size: int) -> list[dict[str, str]]:
        (tmp_path / name).mkdir()
        paths = [tmp_path / name / f"{i}.txt" for i in range(count)]
        for path in paths:
            path.write_text("x" * size)
        return [{"path": str(p)} for p in paths]

    executor = RayDataExecutor(local_max_files=2, embed_batch_size=256, chunk_stride=700)
    assert executor.runs_locally(files("small", 20, 5_000))  # ~143 chunks
    assert not executor.runs_locally(files("large", 20, 20_000))  # ~571 chunks: two inputs, two actors
    assert not RayDataExecutor(local_max_files=0).runs_locally(files("zero", 20, 100))


def test_embedding_pool_starts_and_stays_at_the_size_its_input_keeps_busy():
    """Each actor loads the model: a pool grown on demand and shrunk by utilisation reloaded it over and over."""
    executor = RayDataExecutor(embed_concurrency=(1, 0))
    assert executor.pool_plan(share=2.0, cluster_cpus=2.0, inputs=125) == PoolPlan(2, 2, 1.0, 1)
    assert executor.pool_plan(share=4.0, cluster_cpus=4.0, inputs=3).low == 3  # three batches keep three busy
    assert executor.pool_plan(share=2.0, cluster_cpus=2.0, inputs=1).low == 1
    assert RayDataExecutor(embed_concurrency=(2, 4)).pool_plan(4.0, 8.0, inputs=1).low == 2  # the minimum holds
    assert RayDataExecutor(embed_concurrency=(1, 3)).pool_plan(8.0, 8.0, inputs=50).low == 3  # the maximum too


def test_a_file_jobs_embedding_inputs_are_estimated_from_its_bytes(tmp_path):
    """One embedding batch of text needs one model, whatever the number of input blocks (Ray Data warned that the
    second actor of such a job had no input); Ray Data bundles at least a batch per input, so a remainder adds none;
    a PDF's bytes are mostly not text; database partitions: the rows they hold that the store does not."""
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text("x" * 7_000)  # 10 chunks of 700 new characters
    large.write_text("x" * 700 * 600)  # 600 chunks: two bundles of at least 256
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes(b"%PDF" + b"\0" * 700 * 600)  # the same bytes as a PDF: ~30 chunks of text
    executor = RayDataExecutor(chunk_stride=700, embed_batch_size=256)
    assert executor.embed_inputs([{"path": str(small)}] * 20, blocks=3) == 1
    assert executor.embed_inputs([{"path": str(large)}, {"path": str(small)}], blocks=5) == 2
    assert executor.embed_inputs([{"path": str(large)}] * 3, blocks=2) == 2  # at most the blocks
    assert executor.embed_inputs([{"path": str(pdf)}] * 4, blocks=4) == 1
    assert executor.embed_inputs([{"path": str(tmp_path / "gone.txt")}], blocks=1) == 1
    assert executor.embed_inputs([{"table": "t", "lower": 1}] * 4, blocks=4) == 4  # no estimate: a batch each


def test_a_database_syncs_embedding_inputs_are_the_rows_the_store_lacks():
    """A partition expects its rows minus those already stored (unchanged ones are skipped): a first sync of 700 rows
    in 7 partitions keeps two actors busy, a re-sync of the same rows one (Ray Data warned that its second actor got
    no input, after loading a model for nothing)."""
    from rag_ray.ingest.rdb_stages import PartitionTask
    from rag_ray.sources.rdb.introspect import TableInfo

    table = TableInfo("t", [], ["id"], [], None, None)
    first = [PartitionTask("s", "db", table, rows=100).to_row() for _ in range(7)]
    again = [PartitionTask("s", "db", table, rows=100, known={f"d{i}": "h" for i in range(100)}).to_row()
             for _ in range(7)]
    executor = RayDataExecutor(embed_batch_size=256)
    assert executor.embed_inputs(first, blocks=7) == 2
    assert executor.embed_inputs(again, blocks=7) == 1
    assert executor.pool_plan(share=2.0, cluster_cpus=2.0, inputs=executor.embed_inputs(again, blocks=7)).low == 1


def test_ray_data_logs_rotate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert CONFIG_PATH.read_text() == render_data_logging_config()  # shipped config matches Ray's own defaults
    monkeypatch.setenv("RAY_ROTATION_MAX_BYTES", "2000")
    monkeypatch.setenv("RAY_ROTATION_BACKUP_COUNT", "2")
    handler = RotatingSessionFileHandler("ray-data.log", get_log_directory=lambda: str(tmp_path))
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test.ray_data_rotation")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for i in range(500):
            logger.warning("scheduling loop %05d: operator waiting for resources", i)
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["ray-data.log", "ray-data.log.1", "ray-data.log.2"]
    assert all((tmp_path / f).stat().st_size <= 2000 for f in files)


def test_a_local_ray_that_misses_a_startup_wait_is_started_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Ray's GCS missed its port wait on a clean-clone CI run (it never wrote a log), and on a machine just started the
    raylet missed its registration right after: init_ray tears the half-started node down and starts it again, up to
    three starts in all; any other error is the caller's."""
    import ray

    from jobs import ray_executor

    calls: list[str] = []
    failures = [Exception("The current node timed out during startup. This could happen because ..."),
                RuntimeError("Timed out waiting for file /tmp/ray/session_x/gcs_server_port_abc")]

    def fake_init(**_: object) -> None:
        calls.append("init")
        if failures:
            raise failures.pop()

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(ray_executor, "quiet_ray_data", lambda: None)
    settings = Settings(data_dir=tmp_path)
    ray_executor.init_ray(settings)
    assert calls == ["init", "shutdown", "init", "shutdown", "init"]

    calls.clear()
    failures.extend([Exception("timed out during startup")] * ray_executor.STARTUP_ATTEMPTS)
    with pytest.raises(Exception, match="timed out during startup"):
        ray_executor.init_ray(settings)
    assert calls.count("init") == ray_executor.STARTUP_ATTEMPTS
    failures.clear()

    failures.append(RuntimeError("address already in use"))
    with pytest.raises(RuntimeError, match="already in use"):
        ray_executor.init_ray(settings)
