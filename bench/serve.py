"""Serve benchmark: /embeddings at the model's limit, and /query HTTP overhead, measured side by side.

    uv run python bench/serve.py [--rounds 3] [--requests 192] [--ingress proxy|direct|haproxy]
                                 [--throughput-optimized] [--encoding float|base64] [--auth-cache-ttl 5]
                                 [--router-batch 1|0] [--embedder-replicas N] [--embed-batch-wait S]

Runs the real deployment graph (local embedding model, fake LLM) on a local Ray, the embedder held at its autoscaling
maximum (2 replicas, each on half the cores: where a steady load takes it), and in each round alternates:
``/embeddings`` texts/s at 32 concurrent clients (one short text per request, like query embedding) ↔ the same
model in-process on all cores, same texts, at its best batch size (the physical limit on this machine, swept once), then
``/query`` (search mode) over HTTP ↔ the same retrieval called in-process. Best of the rounds on each side, so a
busy machine lowers both sides alike. ``embed_efficiency_c32`` = served ÷ raw; ``query_overhead_p50_ms`` = the
median of HTTP − in-process over each query's pair (run back to back, so a busy moment hits both). The switches select
the options being compared (Serve's ingress mode, its throughput-optimized mode, the response encoding, the principal
cache, router-side batching into the embedder, the embedder's batch wait). ``served_busy_cores``: the cores each part
of the serving path kept busy during the best served round (every process of the machine, by role);
``raw_busy_cores``: the in-process model's; ``model_core_efficiency``: texts/s per busy model core, served ÷ raw (how
well Serve feeds the cores it leaves the model). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import operator
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cores import OTHER, metered  # bench/cores.py: this script's directory is on sys.path

os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# a busy machine: Serve's proxy may need more than its default 5 s / 10 s to answer its readiness and health checks
os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "60")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from deployments.platform import DRAIN_VARIABLE, HAPROXY_REQUEST_METRICS_VARIABLE, stop_serve  # noqa: E402
from rag_ray.config import Settings  # noqa: E402

SCIFACT = Path(os.environ.get("RAG_BENCH_SCIFACT", ROOT.parent / "shared" / "data" / "scifact"))
CONCURRENCY = 32
RAW_BATCH_SIZES = (8, 16, 32, 64)
# with HAProxy, a stopping router replica drains for RAG_SERVE_DRAIN_S's default (Serve's own 30 s made every shutdown
# here wait it out) and HAProxy skips Serve's per-request metrics line, as `rag-cli serve` sets them
DRAIN_ENV = {DRAIN_VARIABLE: f"{Settings.model_fields['serve_drain_s'].default:g}"}
INGRESS_ENV = {"proxy": {}, "direct": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", **DRAIN_ENV},
               "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", HAPROXY_REQUEST_METRICS_VARIABLE: "0", **DRAIN_ENV}}


def load_texts(path: Path, field: str, limit: int) -> list[str]:
    out: list[str] = []
    with path.open() as fh:
        for line in fh:
            if len(out) >= limit:
                break
            row = json.loads(line)
            out.append(f"{row.get('title', '')}\n{row[field]}".strip())
    return out


# ------------------------------------------------------------------------------------------ the two sides
def role(title: str, pid: int) -> str:
    """Which part of the serving path a process is, from its title (Ray names actor processes ``ray::<class>``)."""
    if pid == os.getpid():
        return "load_generator"
    if "ServeReplica" in title:
        return "embedder" if ":embedder" in title else "router" if ":router" in title else "other_replicas"
    if "haproxy" in title or "ProxyActor" in title:
        return "ingress"
    return OTHER  # Ray's GCS, raylet and workers, Milvus Lite, the controller


async def served_rate(url: str, headers: dict[str, str], texts: list[str], encoding: str,
                      concurrency: int = CONCURRENCY) -> float:
    """Texts/s through HTTP: ``concurrency`` clients, one text per request, every text once. The clients share the
    machine with the server, so they are aiohttp's (0.05 cores at ~150 req/s here; httpx's took 0.15)."""
    import aiohttp

    queue = list(range(len(texts)))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def worker() -> None:
            while queue:
                i = queue.pop()
                body: dict[str, Any] = {"input": [texts[i]]}
                if encoding != "float":
                    body["encoding_format"] = encoding
                async with session.post(f"{url}/embeddings", json=body) as r:
                    r.raise_for_status()
                    await r.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(texts) / (time.perf_counter() - start)


def raw_rate(embedder: Any, texts: list[str], batch_size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        embedder.embed(texts[i:i + batch_size])
    return len(texts) / (time.perf_counter() - start)


def best_raw_batch(embedder: Any, texts: list[str]) -> int:
    embedder.embed(texts[:32])  # warm-up
    rates = {size: raw_rate(embedder, texts[:128], size) for size in RAW_BATCH_SIZES}
    return max(rates, key=lambda size: rates[size])


class HttpSearch:
    """``/query`` in search mode over one kept-alive HTTP connection, as a client that queries again and again."""

    def __init__(self, url: str, headers: dict[str, str]):
        import httpx

        self.url, self.headers = url, headers
        self.client = httpx.Client(timeout=60)

    def latency(self, query: str) -> float:
        start = time.perf_counter()
        r = self.client.post(f"{self.url}/query", headers=self.headers, json={"query": query, "mode": "search", "k": 5})
        r.raise_for_status()
        return (time.perf_counter() - start) * 1000


class InProcessSearch:
    """The same retrieval service the router uses, on the same store and model, without HTTP and Serve."""

    def __init__(self, settings: Any, embedder: Any):
        from rag_ray.embedding.backends import ThreadedBackend
        from rag_ray.retrieval.service import RetrievalService
        from rag_ray.runtime import open_store
        from rag_ray.types import Principal

        self.service = RetrievalService(open_store(settings, embedder.dimension), ThreadedBackend(embedder))
        self.admin = Principal("bench-admin", "admin", "admin")
        self.loop = asyncio.new_event_loop()

    def latency(self, query: str) -> float:
        start = time.perf_counter()
        self.loop.run_until_complete(self.service.search(self.admin, query, k=5))
        return (time.perf_counter() - start) * 1000


def search_latencies(http: HttpSearch, inproc: InProcessSearch, queries: list[str]) -> tuple[list[float], list[float]]:
    """Each query over HTTP, then in-process, query by query: both sides see the machine in the same state."""
    pairs = [(http.latency(q), inproc.latency(q)) for q in queries]
    return [h for h, _ in pairs], [i for _, i in pairs]


# ------------------------------------------------------------------------------------------------- set-up
def seed_corpus(settings: Any, embedder: Any, docs: list[str]) -> None:
    from rag_ray.ingest.stages import chunk_document
    from rag_ray.runtime import open_store
    from rag_ray.text.chunking import Chunker
    from rag_ray.types import Acl, ParsedDocument

    store = open_store(settings, embedder.dimension)
    chunker = Chunker(settings.chunk_size, settings.chunk_overlap)
    chunks = [c for i, text in enumerate(docs) for c in chunk_document(
        ParsedDocument(f"scifact://{i}", text), chunker, Acl("system", (), "public"))]
    for start in range(0, len(chunks), 256):
        batch = chunks[start:start + 256]
        store.upsert(batch, embedder.embed([c.text for c in batch]))
    store.flush()


def ingress_url(settings: Any, ingress: str) -> str:
    """Where clients connect: the proxy's port, or (direct ingress) the router replica's own HTTP port."""
    if ingress != "direct":
        return f"http://127.0.0.1:{settings.api_port}"
    import ray
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    assert client is not None, "serve.start() runs first"
    controller = client._controller
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        groups = ray.get(controller.get_target_groups.remote())
        ports = [t.port for g in groups if str(g.protocol).upper().endswith("HTTP") for t in g.targets]
        if ports:
            return f"http://127.0.0.1:{ports[0]}"
        time.sleep(1)  # the replica registers its port asynchronously
    raise RuntimeError("no direct-ingress HTTP target appeared")


def admin_headers(url: str) -> dict[str, str]:
    import httpx

    token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": "bench-admin-pw"},
                       timeout=60).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=192, help="texts per /embeddings round (one per request)")
    parser.add_argument("--query-requests", type=int, default=100)
    parser.add_argument("--docs", type=int, default=60)
    parser.add_argument("--ingress", choices=tuple(INGRESS_ENV), default="proxy")
    parser.add_argument("--embedder-replicas", type=int, default=0,
                        help="embedder replicas, held fixed (0: the default autoscaling maximum)")
    parser.add_argument("--throughput-optimized", action="store_true",
                        help="RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (RAG_SERVE_THROUGHPUT_OPTIMIZED)")
    parser.add_argument("--embed-batch-wait", type=float, default=None,
                        help="the embedder's @serve.batch wait in s (default: DeploymentOptions)")
    parser.add_argument("--encoding", choices=("float", "base64"), default="float")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY,
                        help="/embeddings clients, one text per request (the ratio's name keeps c32)")
    parser.add_argument("--auth-cache-ttl", type=float, default=None, help="RAG_AUTH_CACHE_TTL_S (default: setting)")
    parser.add_argument("--router-batch", type=int, choices=(0, 1), default=None,
                        help="RAG_EMBED_ROUTER_BATCHING (default: setting)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.update(INGRESS_ENV[args.ingress])  # read by Serve's controller and replicas (children of this Ray)
    if args.throughput_optimized:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"

    import ray
    from ray import serve

    from deployments.app import DeploymentOptions, build_app
    from jobs.ray_executor import init_ray
    from rag_ray.access.bootstrap import bootstrap_admin
    from rag_ray.embedding.local import SentenceTransformerEmbedder
    from rag_ray.metadata import MetadataDB
    from rag_ray.store.lite_server import MilvusLiteServer, free_port

    texts = load_texts(SCIFACT / "queries.jsonl", "text", 1000)
    sample = [texts[i % len(texts)] for i in range(args.requests)]
    queries = texts[: args.query_requests]
    switches: dict[str, Any] = {}
    if args.auth_cache_ttl is not None:
        switches["auth_cache_ttl_s"] = args.auth_cache_ttl
    if args.router_batch is not None:
        switches["embed_router_batching"] = bool(args.router_batch)
    with tempfile.TemporaryDirectory() as tmp, MilvusLiteServer(Path(tmp) / "milvus", free_port()) as milvus:
        settings = Settings(data_dir=Path(tmp), milvus_uri=milvus.uri, llm_provider="fake", llm_model="echo",
                            admin_password="bench-admin-pw", api_port=free_port(),
                            embedding_cache_size=0, **switches)  # every text reaches the model, as on the raw side
        embedder = SentenceTransformerEmbedder()  # one model for seeding, in-process retrieval and the raw rate
        seed_corpus(settings, embedder, load_texts(SCIFACT / "corpus.jsonl", "text", args.docs))
        bootstrap_admin(settings, MetadataDB(settings.metadata_url))
        inproc = InProcessSearch(settings, embedder)
        batch = best_raw_batch(embedder, sample)
        init_ray(settings)
        serve.start(http_options={"host": "127.0.0.1", "port": settings.api_port})
        # default deployment options with the embedder held at --embedder-replicas (default: its autoscaling maximum,
        # where a steady load takes it), so the replica count does not change during a round
        replicas = args.embedder_replicas or DeploymentOptions().embedder_max_replicas
        options = DeploymentOptions(embedder_min_replicas=replicas, embedder_max_replicas=replicas)
        if args.embed_batch_wait is not None:
            options = dataclasses.replace(options, embed_batch_wait_s=args.embed_batch_wait)
        serve.run(build_app(settings, options), name="bench", route_prefix="/", blocking=False)
        url = ingress_url(settings, args.ingress)
        headers = admin_headers(url)
        asyncio.run(served_rate(url, headers, sample[:64], args.encoding))  # warm-up: connections, caches
        http = HttpSearch(url, headers)
        search_latencies(http, inproc, queries[:5])
        served, raw, http_p50, inproc_p50, http_all, inproc_all = [], [], [], [], [], []
        served_cores: list[dict[str, float]] = []
        raw_cores: list[float] = []
        for _ in range(args.rounds):  # alternate the sides; best of the rounds on each
            rate, cores = metered(role, lambda: asyncio.run(
                served_rate(url, headers, sample, args.encoding, args.concurrency)))
            served.append(rate)
            served_cores.append(cores)
            rate, cores = metered(role, lambda: raw_rate(embedder, sample, batch))
            raw.append(rate)
            raw_cores.append(cores["load_generator"])  # this process: the model on all cores
            over_http, local = search_latencies(http, inproc, queries)
            http_p50.append(pct(over_http, 50))
            inproc_p50.append(pct(local, 50))
            http_all += over_http
            inproc_all += local
        http.client.close()
        stop_serve()  # serve.shutdown() without its "graceful_shutdown failed" line
        ray.shutdown()
    best_served, best_raw = served.index(max(served)), raw.index(max(raw))
    model_cores = served_cores[best_served].get("embedder", 0.0)
    result = {"embed_served_texts_per_s_c32": round(max(served), 2), "embed_raw_texts_per_s": round(max(raw), 2),
              "raw_best_batch": batch, "embed_efficiency_c32": round(max(served) / max(raw), 3),
              "embed_served_rounds": [round(v, 1) for v in served],
              "embed_raw_rounds": [round(v, 1) for v in raw],
              "served_busy_cores": served_cores[best_served], "raw_busy_cores": raw_cores[best_raw],
              # texts/s per core the model kept busy, served ÷ raw: how well Serve feeds the cores it gives the model
              "model_core_efficiency": round(max(served) / model_cores / (max(raw) / raw_cores[best_raw]), 3)
              if model_cores else None,
              "query_http_p50_ms": round(min(http_p50), 2), "query_inproc_p50_ms": round(min(inproc_p50), 2),
              "query_overhead_p50_ms": round(statistics.median(map(operator.sub, http_all, inproc_all)), 2),
              "query_http_p95_ms": round(pct(http_all, 95), 2), "query_inproc_p95_ms": round(pct(inproc_all, 95), 2),
              "embedder_replicas": replicas, "embed_batch_wait_s": options.embed_batch_wait_s,
              "ingress": args.ingress, "throughput_optimized": args.throughput_optimized, "encoding": args.encoding,
              "rounds": args.rounds, "concurrency": args.concurrency,
              "texts_per_round": args.requests, **{k: v for k, v in switches.items()}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
