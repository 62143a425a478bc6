"""Serve autoscaling seen to work on a two-node local Ray (a head and a second raylet, as test_multinode starts):
load on ``/embeddings`` (the real local model) and on an LLM route (the fake LLM with a delay) raises the embedder's
and the LLM deployment's replica counts, read from ``serve.status()``, and they fall back once the load stops.

The deployment graph is the real one (``deployments.app.build_app``) with its autoscaling configs; only the delays and
the averaging window are short here. The Serve driver runs in a subprocess (this process may already hold the test
session's own Ray), prints what it saw as one JSON line, and waits on conditions, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rag_ray.store.lite_server import free_port
from tests.cluster import local_cluster

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
EMBEDDER, LLM = "embedder", "llm-fake-echo"
WAIT_S = 150  # per phase (up, down): generous for a busy 2-core machine
# The replicas' and routers' load reports: every half second instead of every 10 s, so a short test sees them.
# Proxy checks with room for a busy machine (defaults 5 s / 10 s).
FAST_METRICS = {"RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
                "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
                "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60"}


@pytest.fixture
def ray_cluster(tmp_path):
    """Head (1 CPU) + second raylet (1 CPU), without a dashboard (the driver itself waits for both nodes through the
    GCS); yields (env, GCS address)."""
    with local_cluster(tmp_path, 2, extra_env={"HF_HUB_OFFLINE": "1", **FAST_METRICS}, dashboard=False) as cluster:
        yield cluster.env, cluster.address


def test_embedder_and_llm_scale_up_under_load_and_back_down(ray_cluster, milvus_uri, tmp_path):
    env, gcs = ray_cluster
    args = json.dumps({"gcs": gcs, "milvus_uri": milvus_uri, "data_dir": str(tmp_path / "data")})
    run = subprocess.run([sys.executable, "-c", f"from tests.test_serve_autoscale import drive; drive({args!r})"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    seen = json.loads(lines[-1])
    for name in (EMBEDDER, LLM):
        counts = seen[name]
        assert counts[0] == 1, f"{name} did not start at one replica: {seen}"
        peak = counts.index(max(counts))
        assert max(counts) >= 2, f"{name} never scaled up under load: {seen}"
        assert counts[-1] == 1 and peak < len(counts) - 1, f"{name} did not scale back down: {seen}"
    assert seen["errors"] == 0, seen


# ------------------------------------------------------------------------------------------ the Serve driver
def drive(raw_args: str) -> None:
    """Runs in a subprocess: deploy, load until both deployments have 2 replicas, stop, wait until both have 1."""
    import ray
    from ray import serve

    from deployments.app import DeploymentOptions, build_app
    from rag_ray.access.bootstrap import bootstrap_admin
    from rag_ray.config import Settings
    from rag_ray.metadata import MetadataDB

    args = json.loads(raw_args)
    port = free_port()
    settings = Settings(data_dir=Path(args["data_dir"]), milvus_uri=args["milvus_uri"],
                        collection=f"autoscale_{secrets.token_hex(4)}", app_env="test", api_port=port,
                        secret_key="autoscale-secret-" + "z" * 40, admin_password="autoscale-pass-1",
                        llm_providers_json='[{"id": "fake:echo", "options": {"delay_s": 1.0}}]',
                        embedding_cache_size=0)  # every text reaches the model (the load is what the test is about)
    db = MetadataDB(settings.metadata_url)
    bootstrap_admin(settings, db)
    db.dispose()
    connect(args["gcs"])
    wait_for(lambda: sum(node["Alive"] for node in ray.nodes()) >= 2, "both raylets")
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    options = DeploymentOptions(router_cpus=0.05, embedder_cpus=0.05, llm_cpus=0.05, evaluator_cpus=0.05,
                                upscale_delay_s=1, downscale_delay_s=3, look_back_period_s=2)
    serve.run(build_app(settings, options), name="rag", route_prefix="/", blocking=False)
    seen: dict[str, Any] = {EMBEDDER: [replicas(EMBEDDER)], LLM: [replicas(LLM)], "errors": 0, "answered": {}}
    asyncio.run(load_until_scaled(f"http://127.0.0.1:{port}", seen))
    wait_for(lambda: record(seen) == (1, 1), "both deployments back at one replica")
    print(json.dumps(seen), flush=True)
    serve.shutdown()
    ray.shutdown()


def connect(gcs: str) -> None:
    """``ray.init`` on the cluster, again while its GCS is too busy to answer (a loaded 2-core machine)."""
    import ray

    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            ray.init(address=gcs, logging_level=logging.WARNING, log_to_driver=False)
            return
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            ray.shutdown()


def replicas(deployment: str) -> int:
    """Replicas the deployment has or is bringing up (a new model replica may take a while to load its model)."""
    from ray import serve
    from ray.serve._private.common import ReplicaState

    status = serve.status().applications["rag"].deployments[deployment]
    live = (ReplicaState.STARTING, ReplicaState.UPDATING, ReplicaState.RECOVERING, ReplicaState.RUNNING)
    return int(sum(status.replica_states.get(state, 0) for state in live))


def status_messages() -> dict[str, str]:
    from ray import serve

    deployments = serve.status().applications["rag"].deployments
    return {name: f"{d.status}: {d.message}" for name, d in deployments.items()}


def record(seen: dict[str, Any]) -> tuple[int, int]:
    counts = replicas(EMBEDDER), replicas(LLM)
    for name, count in zip((EMBEDDER, LLM), counts, strict=True):
        if seen[name][-1] != count:
            seen[name].append(count)
    return counts


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)  # polling Serve's status API


async def load_until_scaled(url: str, seen: dict[str, Any]) -> None:
    """Concurrent clients on /embeddings (128 texts a request) and the LLM route until both reach two replicas."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        token = (await client.post("/auth/token", json={"username": "admin", "password": "autoscale-pass-1"})
                 ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        done = asyncio.Event()
        # large requests of long, distinct texts: the model, not the router, is what the load keeps busy
        paragraph = " ".join(f"replicas queues and load number {i}" for i in range(40))
        sent = itertools.count()
        chat = {"model": "fake:echo", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}

        def embeddings() -> dict[str, Any]:
            batch = next(sent)
            return {"input": [f"request {batch} text {i}: {paragraph}" for i in range(32)], "encoding_format": "base64"}

        async def client_loop(path: str, body: Callable[[], dict[str, Any]]) -> None:
            while not done.is_set():
                response = await client.post(path, json=body(), headers=headers)
                seen["errors"] += response.status_code != 200
                seen["answered"][path] = seen["answered"].get(path, 0) + 1

        async def watch() -> None:
            deadline = time.monotonic() + WAIT_S
            while await asyncio.to_thread(record, seen) != (2, 2) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)  # polling Serve's status API
            seen["status"] = await asyncio.to_thread(status_messages)  # what Serve said, for a failure's message
            done.set()

        clients = [client_loop("/embeddings", embeddings) for _ in range(8)]
        clients += [client_loop("/v1/chat/completions", lambda: chat) for _ in range(16)]
        await asyncio.gather(watch(), *clients)
