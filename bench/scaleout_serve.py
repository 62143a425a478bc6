"""Scale-out of /embeddings: texts/s at 32 concurrent clients with one embedder replica vs two, side by side.

    uv run python bench/scaleout_serve.py [--rounds 2] [--requests 192] [--threads 1] [--ingress proxy|haproxy]
                                          [--throughput-optimized] [--pin]

The real deployment graph (local embedding model) on a local Ray with 2 CPUs; the embedder is redeployed with a fixed
replica count (min = max) alternately 1, 2, 1, 2 … and each count keeps its best round. Every replica runs the model
on ``--threads`` torch threads (RAG_EMBEDDING_THREADS), so one replica cannot already use both cores: the ratio is
what a second replica adds (ideal 2.0 on this 2-core machine, less what the proxy and router take).
``scaleout_ratio`` = best texts/s with 2 ÷ with 1. Its physical limit is the model's own: ``model_ratio`` (as in
``bench/scaleout.py``: two processes, one model thread each on a core of its own, encoding the same texts at once ÷
one alone), and ``efficiency_vs_model`` = ``scaleout_ratio`` ÷ ``model_ratio``. ``cores_1`` / ``cores_2``: the cores
each part of the serving path kept busy in each side's best round (as in ``bench/serve.py``), and
``embedder_core_ratio``: the embedder's busy cores with 2 replicas ÷ with 1 — how much of a second core the second
replica got beside the router, the ingress, the load generator and Ray's own processes.

``--pin``: as in ``bench/scaleout.py``, "1 CPU" is a core — each round and side gets a fresh cluster of one or two
1-CPU raylets, each on a core of its own; Serve's ingress, controller and router run on the head, one embedder
replica per raylet (0.6 CPU each: two never fit one), and this script (the load generator) and Milvus Lite on the
head's core. The one-replica side is then a 1-core machine serving everything, and the second raylet adds a core that
only a replica uses. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cores import metered  # noqa: E402
from scaleout import model_ratio, node_cores  # noqa: E402  # bench/scaleout.py: this directory is on sys.path

from bench.serve import INGRESS_ENV, SCIFACT, admin_headers, ingress_url, load_texts, role, served_rate  # noqa: E402
from deployments.platform import stop_serve  # noqa: E402
from jobs.ray_executor import SERVE_ENV  # noqa: E402

if TYPE_CHECKING:
    from deployments.app import DeploymentOptions  # imports Serve, which reads the ingress switches on import


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=192, help="texts per round (one per request)")
    parser.add_argument("--concurrency", type=int, default=32, help="clients, one text per request, on both sides")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per embedder replica")
    parser.add_argument("--ingress", choices=("proxy", "haproxy"), default="proxy")
    parser.add_argument("--throughput-optimized", action="store_true", help="RAY_SERVE_THROUGHPUT_OPTIMIZED=1")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=False,
                        help="one 1-CPU raylet per core; one replica per raylet, the serving path on the head's")
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # internal: one pinned side's driver (a JSON spec)
    args = parser.parse_args()
    if args.drive:
        drive_pinned_side(json.loads(args.drive))
        return
    serve_env = {**INGRESS_ENV[args.ingress],
                 **({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"} if args.throughput_optimized else {})}
    os.environ.update(serve_env)  # read by Serve's controller and replicas (children of this Ray)

    from rag_ray.access.bootstrap import bootstrap_admin
    from rag_ray.metadata import MetadataDB
    from rag_ray.store.lite_server import MilvusLiteServer, free_port

    usable = sorted(os.sched_getaffinity(0))[:2]
    texts = load_texts(SCIFACT / "queries.jsonl", "text", 1000)
    sample = [texts[i % len(texts)] for i in range(args.requests)]
    model, _, _ = model_ratio(usable, texts, args.rounds)  # before Ray takes the cores
    if args.pin:
        os.sched_setaffinity(0, node_cores(usable)[0])  # Milvus Lite and the drivers live on the head's core
    with tempfile.TemporaryDirectory() as tmp, MilvusLiteServer(Path(tmp) / "milvus", free_port()) as milvus:
        spec = {"data_dir": tmp, "milvus_uri": milvus.uri, "threads": args.threads, "texts": sample,
                "concurrency": args.concurrency}
        settings = bench_settings(spec, 0)
        bootstrap_admin(settings, MetadataDB(settings.metadata_url))
        if args.pin:
            rates, cores = pinned_sides(spec, args.rounds, serve_env, node_cores(usable))
        else:
            rates, cores = shared_sides(spec, args.rounds, args.ingress)
    one, two = max(rates[1]), max(rates[2])
    print(json.dumps({"embed_texts_per_s_1_replica": round(one, 2), "embed_texts_per_s_2_replicas": round(two, 2),
                      "scaleout_ratio": round(two / one, 3), "rounds_1": [round(v, 1) for v in rates[1]],
                      "rounds_2": [round(v, 1) for v in rates[2]], "threads_per_replica": args.threads,
                      "ingress": args.ingress, "throughput_optimized": args.throughput_optimized, "pinned": args.pin,
                      "concurrency": args.concurrency, "texts_per_round": args.requests, "model_ratio": round(model, 3),
                      "efficiency_vs_model": round(two / one / model, 3), "cores_1": cores[1], "cores_2": cores[2],
                      "embedder_core_ratio": round(cores[2].get("embedder", 0.0) / cores[1]["embedder"], 3)}))


def bench_settings(spec: dict[str, Any], port: int) -> Any:
    from rag_ray.config import Settings

    return Settings(data_dir=Path(spec["data_dir"]), milvus_uri=spec["milvus_uri"], llm_provider="fake",
                    llm_model="echo", admin_password="bench-admin-pw", api_port=port, embedding_cache_size=0,
                    embedding_threads=spec["threads"])


Rates = dict[int, list[float]]
Cores = dict[int, dict[str, float]]


def shared_sides(spec: dict[str, Any], rounds: int, ingress: str) -> tuple[Rates, Cores]:
    """One local Ray of 2 CPUs, both cores shared by every process; the embedder redeployed at 1, 2, 1, 2 … replicas."""
    import ray
    from ray import serve

    from deployments.app import DeploymentOptions
    from jobs.ray_executor import init_ray
    from rag_ray.store.lite_server import free_port

    settings = bench_settings(spec, free_port())
    rates: Rates = {1: [], 2: []}
    cores: Cores = {}
    init_ray(settings, num_cpus=2)
    serve.start(http_options={"host": "127.0.0.1", "port": settings.api_port})
    url = ingress_url(settings, ingress)
    for _ in range(rounds):
        for replicas in (1, 2):  # alternate the sides
            options = DeploymentOptions(embedder_cpus=0.5, embedder_min_replicas=replicas,
                                        embedder_max_replicas=replicas)
            rate, busy = deploy_and_load(settings, url, options, spec["texts"], spec["concurrency"])
            if rate > max(rates[replicas], default=0.0):
                cores[replicas] = busy
            rates[replicas].append(rate)
    stop_serve()  # serve.shutdown() without its "graceful_shutdown failed" line
    ray.shutdown()
    return rates, cores


def pinned_sides(spec: dict[str, Any], rounds: int, serve_env: dict[str, str],
                 cores_by_node: list[frozenset[int]]) -> tuple[Rates, Cores]:
    """A fresh cluster of 1 or 2 one-CPU raylets, each on a core of its own, per round and side (as
    ``bench/scaleout.py``); its driver runs on the head's core."""
    from tests.cluster import local_cluster

    rates: Rates = {1: [], 2: []}
    cores: Cores = {}
    extra_env = {"HF_HUB_OFFLINE": "1", "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
                 "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
                 **SERVE_ENV,  # as init_ray sets them
                 **serve_env}
    for round_ in range(rounds):
        for nodes in (1, 2):
            home = Path(spec["data_dir"]) / f"ray_{round_}_{nodes}"
            home.mkdir()
            with local_cluster(home, nodes, extra_env=extra_env, dashboard=False,
                               cores=cores_by_node[:nodes]) as cluster:
                side = {**spec, "address": cluster.address, "replicas": nodes}
                run = subprocess.run([sys.executable, __file__, "--drive", json.dumps(side)], env=cluster.env,
                                     cwd=ROOT, capture_output=True, text=True, timeout=1200)
            lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
            if run.returncode != 0 or not lines:
                raise RuntimeError(run.stdout[-2000:] + run.stderr[-3000:])
            result = json.loads(lines[-1])
            if result["rate"] > max(rates[nodes], default=0.0):
                cores[nodes] = result["cores"]
            rates[nodes].append(result["rate"])
    return rates, cores


def drive_pinned_side(spec: dict[str, Any]) -> None:
    """In its own process on the cluster at ``spec["address"]``: Serve with its ingress on the head, the embedder at
    ``spec["replicas"]`` (one per raylet: two do not fit one), 32 clients; prints {rate, cores}."""
    import ray
    from ray import serve

    from deployments.app import DeploymentOptions
    from rag_ray.store.lite_server import free_port

    settings = bench_settings(spec, free_port())
    ray.init(address=spec["address"], logging_level=logging.WARNING, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": settings.api_port}, proxy_location="HeadOnly")
    # 0.6 CPU: two embedder replicas never fit one raylet, so each node runs one
    options = DeploymentOptions(router_cpus=0.05, llm_cpus=0.05, evaluator_cpus=0.05, embedder_cpus=0.6,
                                embedder_min_replicas=spec["replicas"], embedder_max_replicas=spec["replicas"])
    rate, busy = deploy_and_load(settings, f"http://127.0.0.1:{settings.api_port}", options, spec["texts"],
                                 spec["concurrency"])
    print(json.dumps({"rate": rate, "cores": busy}), flush=True)
    stop_serve()  # serve.shutdown() without its "graceful_shutdown failed" line
    ray.shutdown()


def deploy_and_load(settings: Any, url: str, options: DeploymentOptions, texts: list[str], concurrency: int
                    ) -> tuple[float, dict[str, float]]:
    """The app with the embedder held at its replica count; texts/s of ``concurrency`` one-text clients and the cores
    by role."""
    from ray import serve

    from deployments.app import build_app

    serve.run(build_app(settings, options), name="bench", route_prefix="/", blocking=False)
    wait_for_replicas(options.embedder_min_replicas)
    headers = admin_headers(url)
    asyncio.run(served_rate(url, headers, texts[:64], "float"))  # warm-up: every replica's model
    return metered(role, lambda: asyncio.run(served_rate(url, headers, texts, "float", concurrency)))


def wait_for_replicas(count: int, timeout_s: float = 300) -> None:
    from ray import serve
    from ray.serve._private.common import ReplicaState

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.status().applications.get("bench")
        embedder = app.deployments.get("embedder") if app else None
        states = embedder.replica_states if embedder else {}
        if states.get(ReplicaState.RUNNING, 0) == count and sum(states.values()) == count:
            return
        time.sleep(1)  # polling Serve's status API while replicas start or stop
    raise RuntimeError(f"the embedder did not settle at {count} replica(s)")


if __name__ == "__main__":
    main()
