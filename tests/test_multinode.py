"""The multi-node path on one machine: a head and a second raylet (`ray start`), an ingest submitted with
`ray job submit --working-dir .`, and Ray's state API showing its tasks ran on both nodes."""

from __future__ import annotations

import json
import time

import pytest

from rag_ray.store.milvus import ChunkStore
from tests.cluster import ROOT, local_cluster, ray_cli, state
from tests.ingest_helpers import copy_documents

pytestmark = pytest.mark.slow


@pytest.fixture
def two_node_cluster(tmp_path):
    with local_cluster(tmp_path, nodes=2) as cluster:
        yield cluster


def test_ingest_job_runs_on_both_nodes(two_node_cluster, tmp_path, shared_data, make_settings):
    cluster = two_node_cluster
    env, dashboard = cluster.env, cluster.dashboard
    settings = make_settings()
    docs = copy_documents(shared_data, tmp_path)
    runtime_env = {"working_dir": str(ROOT), "excludes": [".venv", "data", ".git", "**/__pycache__"],
                   "env_vars": {"MILVUS_URI": settings.milvus_address, "RAG_COLLECTION": settings.collection,
                                "RAG_DATA_DIR": str(tmp_path / "jobdata"), "EMBEDDING_PROVIDER": "fake",
                                "EMBEDDING_MODEL": "hash-bow", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
                                "RAG_JOBS_LOCAL_MAX_FILES": "0"}}  # a pipeline, though one actor could embed it
    args = ["job", "submit", f"--address={dashboard}", f"--runtime-env-json={json.dumps(runtime_env)}",
            "--", "python", "-m", "jobs.ingest_files", str(docs), "--file-types", "txt,md,docx,xlsx"]
    deadline = time.monotonic() + 120
    while True:  # the dashboard answers before its job agent is ready ("No available agent")
        submit = ray_cli(args, env, timeout=600)
        if "No available agent" not in submit.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    summary = json.loads([line for line in submit.stdout.splitlines() if line.startswith('{"job_id"')][-1])
    assert summary["status"] == "succeeded" and summary["files_processed"] == 9

    store = ChunkStore.connect(settings.milvus_address, settings.collection, 64)
    assert store.count() == summary["chunks_written"] > 0

    nodes = {n["node_id"] for n in state("nodes", cluster) if n["state"] == "ALIVE"}
    deadline = time.monotonic() + 60
    while True:
        tasks = state("tasks", cluster)
        used = {t["node_id"] for t in tasks if t.get("node_id") and str(t.get("name", "")).startswith(
            ("FlatMap", "MapBatches"))}
        if len(used) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(1)  # the state API aggregates task events asynchronously
    assert len(nodes) == 2
    assert used == nodes, f"pipeline tasks ran on {len(used)} of {len(nodes)} nodes"

