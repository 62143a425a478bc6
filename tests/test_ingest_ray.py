"""The real pipeline: Ray Data job (local Ray), real embedding model, Milvus Lite, then retrieval."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from jobs.ingest_files import run_file_job
from jobs.ray_executor import EMBEDDER_NAMESPACE
from rag_ray.embedding.backends import ThreadedBackend
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.ingest.executor import LeveledStages
from rag_ray.ingest.file_ingest import FileIngestRequest
from rag_ray.retrieval.service import RetrievalService
from rag_ray.runtime import IngestStages, InProcessStages, Runtime
from rag_ray.types import Acl, Principal
from tests.ingest_helpers import copy_documents

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture
def local_settings(make_settings):
    # jobs_local_max_files=0: these documents (text for one embedding input) would otherwise run in the driver
    return make_settings(embedding_provider="local", embedding_model="all-MiniLM-L6-v2", jobs_local_max_files=0)


def test_ray_job_ingests_documents_and_retrieval_finds_them(tmp_path, shared_data, local_settings, local_embedder):
    docs = copy_documents(shared_data, tmp_path)
    request = FileIngestRequest(path=docs, recursive=True, acl=Acl("system", (), "public"))
    summary = run_file_job(local_settings, request)
    assert summary.status == "succeeded", summary.errors
    assert summary.files_processed == 14 and summary.chunks_written > 100

    with Runtime(local_settings, embedder=local_embedder) as runtime:
        ids_before = runtime.store.ids_where("")
        assert len(ids_before) == summary.chunks_written
        again = run_file_job(local_settings, request)
        assert (again.files_processed, again.chunks_written) == (0, 0)
        assert runtime.store.ids_where("") == ids_before

        retrieval = RetrievalService(runtime.store, ThreadedBackend(local_embedder))
        reader = Principal("reader")
        cases = {"Which teams won the most Stanley Cups?": "en_stanley_cups.xlsx",
                 "a unified toolkit for deep learning based document image analysis": "en_layout_parser_paper_2p.pdf",
                 "How do I configure Babel presets and plugins?": "en_babel_user_handbook.md"}
        for query, expected in cases.items():
            hits = asyncio.run(retrieval.search(reader, query, k=3))
            assert expected in [Path(h.source_uri).name for h in hits], (query, [h.source_uri for h in hits])


def script_env(settings, home: Path) -> dict[str, str]:
    return {"RAG_DATA_DIR": str(settings.data_dir), "MILVUS_URI": settings.milvus_uri or "",
            "RAG_COLLECTION": settings.collection, "EMBEDDING_PROVIDER": "fake", "EMBEDDING_MODEL": "hash-bow",
            "PATH": "/usr/bin:/bin", "HOME": str(home), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


def test_a_job_its_driver_runs_starts_no_ray(tmp_path, shared_data, make_settings):
    """The README's documents (14 files, text for one embedding input: a pipeline could run one embedding actor)
    run in the driver, and a driver outside Ray (the CLI, this script) starts no Ray for them."""
    docs = copy_documents(shared_data, tmp_path)
    script = ("import json, sys, ray; from jobs.ingest_files import main; rc = main(sys.argv[1:]); "
              "print(json.dumps({'rc': rc, 'ray_started': ray.is_initialized()}))")
    proc = subprocess.run([sys.executable, "-c", script, str(docs)], capture_output=True, text=True,
                          env=script_env(make_settings(), tmp_path), timeout=300, cwd=Path(__file__).parents[1])
    summary, outcome = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert outcome == {"rc": 0, "ray_started": False}, proc.stderr[-2000:]
    assert summary["files_processed"] == 14 and summary["chunks_written"] > 100


def test_job_module_runs_as_a_script(tmp_path, shared_data, make_settings):
    """`python -m jobs.ingest_files` (what `ray job submit` runs) works and prints a JSON summary."""
    settings = make_settings()
    docs = copy_documents(shared_data, tmp_path)
    env = script_env(settings, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "jobs.ingest_files", str(docs), "--file-types", "txt,md"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["files_processed"] == 5
    bad = subprocess.run([sys.executable, "-m", "jobs.ingest_files", str(tmp_path / "missing")],
                         capture_output=True, text=True, env=env, timeout=300, cwd=Path(__file__).parents[1])
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_a_small_job_on_ray_embeds_in_the_shared_model_actor(tmp_path, make_settings):
    """A job its driver runs, in a process already on Ray, embeds in the cluster's shared actor for its model (one
    model load for all small jobs); the actor is found by the model's identity whatever wrappers the stages carry,
    and gets plain settings-built factories (never a job's wrappers or an in-process embedder)."""
    settings = make_settings()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Basalt is a fine-grained volcanic rock.")
    summary = run_file_job(settings, FileIngestRequest(path=docs, acl=Acl("system", (), "public")))
    assert summary.status == "succeeded" and summary.chunks_written == 1, summary.errors

    model = LeveledStages(InProcessStages(settings, 64, FakeEmbedder(), None), "basic").shared_model()  # type: ignore[arg-type]
    assert model is not None and type(model.factories) is IngestStages
    assert model == IngestStages(settings, 64).shared_model()
    assert IngestStages(make_settings(embedding_threads=1), 64).shared_model().key != model.key
    actor = ray.get_actor(f"rag-embed-{model.key[:16]}", namespace=EMBEDDER_NAMESPACE)  # raises if the job did not
    ray.kill(actor)


def test_the_local_ray_keeps_idle_workers_for_a_pipelines_tasks():
    """The Ray that init_ray starts keeps CPUs + WORKER_HEADROOM idle workers, not Ray's one per CPU (actors
    included): a pipeline's CPU-less parse tasks otherwise got a freshly started worker each (82 worker starts, 205 s
    vs 12 and 102 s for one 2,084-chunk job, bench/scaleout.py). The raylet reads it from its environment."""
    import os

    import psutil

    from jobs.ray_executor import WORKER_SOFT_LIMIT_ENV, worker_soft_limit

    node = ray.get_runtime_context().get_node_id()
    raylets = [p for p in psutil.process_iter(["name", "cmdline"])
               if p.info["name"] == "raylet" and f"--node_id={node}" in (p.info["cmdline"] or [])]
    assert len(raylets) == 1, raylets
    expected = os.environ.get(WORKER_SOFT_LIMIT_ENV) or str(worker_soft_limit(os.cpu_count() or 1))
    assert raylets[0].environ().get(WORKER_SOFT_LIMIT_ENV) == expected == str(worker_soft_limit(os.cpu_count() or 1))
