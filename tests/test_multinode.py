"""The multi-node path on one machine: a head and a second raylet (`ray start`), an ingest submitted with
`ray job submit --working-dir .`, and Ray's state API showing its tasks ran on both nodes."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rag_ray.store.lite_server import free_port
from rag_ray.store.milvus import ChunkStore
from tests.ingest_helpers import copy_documents

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def _ray(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _node_ports() -> list[str]:
    """Fresh ports for each raylet's agents: the defaults collide with any other Ray on this machine."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]


def _start_node(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`ray start --block` in its own process group, so stopping it stops exactly this node — never
    `ray stop`, which kills every Ray process on the machine (the test session's own Ray included)."""
    return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *_node_ports(), *args], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _stop_node(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _wait_for_nodes(env: dict[str, str], dashboard: str, count: int, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "a ray node exited while starting"
        listed = _ray(["list", "nodes", f"--address={dashboard}", "--format=json"], env, timeout=60)
        with contextlib.suppress(ValueError):  # before the dashboard is up the CLI prints no JSON
            if listed.returncode == 0 and sum(n["state"] == "ALIVE" for n in json.loads(listed.stdout)) >= count:
                return
        time.sleep(1)  # nodes register with the GCS asynchronously
    raise AssertionError(f"{count} ray nodes did not come up")


@pytest.fixture
def two_node_cluster(tmp_path):
    gcs_port, dash_port = free_port(), free_port()
    env = {**os.environ, "HOME": str(tmp_path), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    env.pop("RAY_ADDRESS", None)
    temp = Path(tempfile.mkdtemp(prefix="rr-", dir="/tmp"))  # unix socket paths must stay under 107 bytes
    dashboard = f"http://127.0.0.1:{dash_port}"
    head = _start_node(["--head", f"--port={gcs_port}", "--num-cpus=1", f"--dashboard-port={dash_port}",
                        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--temp-dir={temp}"], env)
    nodes = [head]
    try:
        _wait_for_nodes(env, dashboard, 1, nodes)
        nodes.append(_start_node([f"--address=127.0.0.1:{gcs_port}", "--num-cpus=1"], env))
        _wait_for_nodes(env, dashboard, 2, nodes)
        yield env, dashboard
    finally:
        for proc in reversed(nodes):
            _stop_node(proc)
        shutil.rmtree(temp, ignore_errors=True)


def test_ingest_job_runs_on_both_nodes(two_node_cluster, tmp_path, shared_data, make_settings):
    env, dashboard = two_node_cluster
    settings = make_settings()
    docs = copy_documents(shared_data, tmp_path)
    runtime_env = {"working_dir": str(ROOT), "excludes": [".venv", "data", ".git", "**/__pycache__"],
                   "env_vars": {"MILVUS_URI": settings.milvus_address, "RAG_COLLECTION": settings.collection,
                                "RAG_DATA_DIR": str(tmp_path / "jobdata"), "EMBEDDING_PROVIDER": "fake",
                                "EMBEDDING_MODEL": "hash-bow", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}}
    args = ["job", "submit", f"--address={dashboard}", f"--runtime-env-json={json.dumps(runtime_env)}",
            "--", "python", "-m", "jobs.ingest_files", str(docs), "--file-types", "txt,md,docx,xlsx"]
    deadline = time.monotonic() + 120
    while True:  # the dashboard answers before its job agent is ready ("No available agent")
        submit = _ray(args, env, timeout=600)
        if "No available agent" not in submit.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    summary = json.loads([line for line in submit.stdout.splitlines() if line.startswith('{"job_id"')][-1])
    assert summary["status"] == "succeeded" and summary["files_processed"] == 9

    store = ChunkStore.connect(settings.milvus_address, settings.collection, 64)
    assert store.count() == summary["chunks_written"] > 0

    nodes = {n["node_id"] for n in _state("nodes", env, dashboard) if n["state"] == "ALIVE"}
    deadline = time.monotonic() + 60
    while True:
        tasks = _state("tasks", env, dashboard)
        used = {t["node_id"] for t in tasks if t.get("node_id") and str(t.get("name", "")).startswith(
            ("FlatMap", "MapBatches"))}
        if len(used) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(1)  # the state API aggregates task events asynchronously
    assert len(nodes) == 2
    assert used == nodes, f"pipeline tasks ran on {len(used)} of {len(nodes)} nodes"


def _state(kind: str, env: dict[str, str], dashboard: str) -> list[dict]:
    out = _ray(["list", kind, f"--address={dashboard}", "--format=json", "--limit=10000", "--detail"], env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)
