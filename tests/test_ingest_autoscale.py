"""The embedding actor pool autoscales by default: on a two-node cluster (a head and a second raylet, 1 CPU each,
as in test_multinode) an ingest with no concurrency settings starts one embedding actor and grows the pool past
one; Ray's state API lists the actors of the embedding step."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rag_ray.store.lite_server import free_port
from rag_ray.store.milvus import ChunkStore
from tests.test_multinode import RAY, ROOT, _start_node, _state, _stop_node

SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900),  # ~1 min idle; a busy 2-core machine is far slower
              pytest.mark.skipif(not SCIFACT.exists(), reason=f"shared data not found at {SCIFACT}")]


def wait_for_nodes(env: dict[str, str], dashboard: str, count: int, procs: list[subprocess.Popen[bytes]]) -> None:
    """Until ``count`` nodes are alive (a busy machine may take minutes; a CLI call that hangs is retried)."""
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "a ray node exited while starting"
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError):  # no JSON before the dashboard is up
            listed = subprocess.run([RAY, "list", "nodes", f"--address={dashboard}", "--format=json"], env=env,
                                    capture_output=True, text=True, timeout=90, cwd=ROOT)
            if listed.returncode == 0 and sum(n["state"] == "ALIVE" for n in json.loads(listed.stdout)) >= count:
                return
        time.sleep(1)  # nodes register with the GCS asynchronously
    raise AssertionError(f"{count} ray nodes did not come up")


@pytest.fixture
def cluster(tmp_path):
    """(env for drivers and the CLI, dashboard URL, GCS address) of a head and a worker raylet, 1 CPU each."""
    gcs_port, dash_port = free_port(), free_port()
    env = {**os.environ, "HOME": str(tmp_path), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    env.pop("RAY_ADDRESS", None)
    temp = Path(tempfile.mkdtemp(prefix="rr-", dir="/tmp"))  # unix socket paths must stay under 107 bytes
    dashboard = f"http://127.0.0.1:{dash_port}"
    nodes = [_start_node(["--head", f"--port={gcs_port}", "--num-cpus=1", f"--dashboard-port={dash_port}",
                          "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--temp-dir={temp}"], env)]
    try:
        wait_for_nodes(env, dashboard, 1, nodes)
        nodes.append(_start_node([f"--address=127.0.0.1:{gcs_port}", "--num-cpus=1"], env))
        wait_for_nodes(env, dashboard, 2, nodes)
        yield env, dashboard, f"127.0.0.1:{gcs_port}"
    finally:
        for proc in reversed(nodes):
            _stop_node(proc)
        shutil.rmtree(temp, ignore_errors=True)


def write_scifact(target: Path, limit: int) -> Path:
    target.mkdir(parents=True)
    with SCIFACT.open() as fh:
        for _, line in zip(range(limit), fh, strict=False):
            doc = json.loads(line)
            (target / f"{doc['_id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}\n", encoding="utf-8")
    return target


def test_embedding_pool_grows_past_one_actor_by_default(cluster, tmp_path, make_settings):
    env, dashboard, address = cluster
    settings = make_settings()
    docs = write_scifact(tmp_path / "scifact", 300)
    job_env = {**env, "RAY_ADDRESS": address, "MILVUS_URI": settings.milvus_address,
               "RAG_COLLECTION": "autoscale", "RAG_DATA_DIR": str(tmp_path / "jobdata"),
               "EMBEDDING_PROVIDER": "local", "EMBEDDING_MODEL": "all-MiniLM-L6-v2", "HF_HUB_OFFLINE": "1",
               "RAG_JOBS_MAX_CONCURRENT": "1", "RAG_JOBS_LOCAL_MAX_FILES": "0"}
    for name in ("RAG_EMBED_CONCURRENCY_MIN", "RAG_EMBED_CONCURRENCY_MAX", "RAG_EMBED_ACTOR_CPUS"):
        job_env.pop(name, None)  # the defaults: autoscaling between 1 and what the cluster's CPUs allow
    run = subprocess.run([sys.executable, "-m", "jobs.ingest_files", str(docs)], env=job_env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["files_processed"] == 300
    assert ChunkStore.connect(settings.milvus_address, "autoscale", 384).count() == summary["chunks_written"]

    embedders = [a for a in _state("actors", env, dashboard) if "_Embed" in str(a.get("repr_name", ""))]
    assert len(embedders) >= 2, f"the embedding pool never grew: {[a.get('repr_name') for a in embedders]}"
    assert len({a["node_id"] for a in embedders}) == 2  # one actor per raylet: each reserved its node's CPU
