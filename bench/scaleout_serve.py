"""Scale-out of /embeddings: texts/s at 32 concurrent clients with one embedder replica vs two, side by side.

    uv run python bench/scaleout_serve.py [--rounds 2] [--requests 192] [--threads 1] [--ingress proxy|haproxy]
                                          [--throughput-optimized]

The real deployment graph (local embedding model) on a local Ray with 2 CPUs; the embedder is redeployed with a fixed
replica count (min = max) alternately 1, 2, 1, 2 … and each count keeps its best round. Every replica runs the model
on ``--threads`` torch threads (RAG_EMBEDDING_THREADS), so one replica cannot already use both cores: the ratio is
what a second replica adds (ideal 2.0 on this 2-core machine, less what the proxy and router take).
``scaleout_ratio`` = best texts/s with 2 ÷ with 1. Its physical limit is the model's own: ``model_ratio`` (as in
``bench/scaleout.py``: two processes, one model thread each on a core of its own, encoding the same texts at once ÷
one alone), and ``efficiency_vs_model`` = ``scaleout_ratio`` ÷ ``model_ratio``. ``cores_1`` / ``cores_2``: the cores
each part of the serving path kept busy in each side's best round (as in ``bench/serve.py``), and
``embedder_core_ratio``: the embedder's busy cores with 2 replicas ÷ with 1 — how much of a second core the second
replica got beside the router, the ingress, the load generator and Ray's own processes. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cores import metered  # noqa: E402
from scaleout import model_ratio  # noqa: E402  # bench/scaleout.py: this script's directory is on sys.path

from bench.serve import INGRESS_ENV, SCIFACT, admin_headers, ingress_url, load_texts, role, served_rate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=192, help="texts per round (one per request)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per embedder replica")
    parser.add_argument("--ingress", choices=("proxy", "haproxy"), default="proxy")
    parser.add_argument("--throughput-optimized", action="store_true", help="RAY_SERVE_THROUGHPUT_OPTIMIZED=1")
    args = parser.parse_args()
    os.environ.update(INGRESS_ENV[args.ingress])  # read by Serve's controller and replicas (children of this Ray)
    if args.throughput_optimized:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"

    import ray
    from ray import serve

    from deployments.app import DeploymentOptions, build_app
    from jobs.ray_executor import init_ray
    from rag_ray.access.bootstrap import bootstrap_admin
    from rag_ray.config import Settings
    from rag_ray.metadata import MetadataDB
    from rag_ray.store.lite_server import MilvusLiteServer, free_port

    texts = load_texts(SCIFACT / "queries.jsonl", "text", 1000)
    sample = [texts[i % len(texts)] for i in range(args.requests)]
    model, _, _ = model_ratio(sorted(os.sched_getaffinity(0))[:2], texts, args.rounds)  # before Ray takes the cores
    rates: dict[int, list[float]] = {1: [], 2: []}
    cores: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, MilvusLiteServer(Path(tmp) / "milvus", free_port()) as milvus:
        settings = Settings(data_dir=Path(tmp), milvus_uri=milvus.uri, llm_provider="fake", llm_model="echo",
                            admin_password="bench-admin-pw", api_port=free_port(), embedding_cache_size=0,
                            embedding_threads=args.threads)
        bootstrap_admin(settings, MetadataDB(settings.metadata_url))
        init_ray(settings, num_cpus=2)
        serve.start(http_options={"host": "127.0.0.1", "port": settings.api_port})
        url = ingress_url(settings, args.ingress)
        for _ in range(args.rounds):
            for replicas in (1, 2):  # alternate the sides
                options = DeploymentOptions(embedder_cpus=0.5, embedder_min_replicas=replicas,
                                            embedder_max_replicas=replicas)
                serve.run(build_app(settings, options), name="bench", route_prefix="/", blocking=False)
                wait_for_replicas(replicas)
                headers = admin_headers(url)
                asyncio.run(served_rate(url, headers, sample[:64], "float"))  # warm-up: every replica's model
                rate, busy = metered(role, lambda h=headers: asyncio.run(served_rate(url, h, sample, "float")))
                if rate > max(rates[replicas], default=0.0):
                    cores[replicas] = busy
                rates[replicas].append(rate)
        serve.shutdown()
        ray.shutdown()
    one, two = max(rates[1]), max(rates[2])
    print(json.dumps({"embed_texts_per_s_1_replica": round(one, 2), "embed_texts_per_s_2_replicas": round(two, 2),
                      "scaleout_ratio": round(two / one, 3), "rounds_1": [round(v, 1) for v in rates[1]],
                      "rounds_2": [round(v, 1) for v in rates[2]], "threads_per_replica": args.threads,
                      "ingress": args.ingress, "throughput_optimized": args.throughput_optimized,
                      "concurrency": 32, "texts_per_round": args.requests, "model_ratio": round(model, 3),
                      "efficiency_vs_model": round(two / one / model, 3), "cores_1": cores[1], "cores_2": cores[2],
                      "embedder_core_ratio": round(cores[2].get("embedder", 0.0) / cores[1]["embedder"], 3)}))


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
