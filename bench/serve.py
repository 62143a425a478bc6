"""Serve benchmark: /embeddings throughput with @serve.batch on and off, and /query HTTP overhead.

    uv run python bench/serve.py [--requests 96] [--query-requests 60] [--docs 300]

Runs the real deployment graph (local embedding model, fake LLM) on a local Ray, twice: once with
request batching, once without. Measures /embeddings requests/s at concurrency 1, 8, 32 (one short text
per request, like query embedding), and /query (search mode) p50/p95 over HTTP against the same retrieval
called in-process. For context it also measures, in-process on the same texts, the model's own batching gain
(encode 32 texts per call vs one per call): no server can batch better than the model does, so
``batch_efficiency_c32`` = ``batch_speedup_c32`` / ``raw_batch_gain_32``. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
CONCURRENCY = (1, 8, 32)


def load_texts(path: Path, field: str, limit: int) -> list[str]:
    out = []
    with path.open() as fh:
        for line in fh:
            if len(out) >= limit:
                break
            row = json.loads(line)
            out.append(f"{row.get('title', '')}\n{row[field]}".strip())
    return out


async def rps(url: str, headers: dict[str, str], texts: list[str], concurrency: int, total: int) -> float:
    import httpx

    queue = list(range(total))
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            while queue:
                i = queue.pop()
                r = await client.post(f"{url}/embeddings", headers=headers, json={"input": [texts[i % len(texts)]]})
                r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - start)


def embed_rates(url: str, headers: dict[str, str], texts: list[str], total: int) -> dict[int, float]:
    asyncio.run(rps(url, headers, texts, 8, 16))  # warm-up: replicas, connections, model caches
    return {c: asyncio.run(rps(url, headers, texts, c, total)) for c in CONCURRENCY}


def raw_batch_rates(embedder, texts: list[str], total: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Texts/s of the bare model, one text per call vs 32 per call (same texts as the HTTP run)."""
    embedder.embed(texts[:32])  # warm-up
    sample = [texts[i % len(texts)] for i in range(total)]
    rates = {}
    for size in (1, 32):
        start = time.perf_counter()
        for i in range(0, total, size):
            embedder.embed(sample[i:i + size])
        rates[f"raw_texts_per_s_batch{size}"] = total / (time.perf_counter() - start)
    return rates


def http_latencies(url: str, headers: dict[str, str], queries: list[str]) -> list[float]:
    import httpx

    out = []
    with httpx.Client(timeout=60) as client:
        for q in queries:
            start = time.perf_counter()
            r = client.post(f"{url}/query", headers=headers, json={"query": q, "mode": "search", "k": 5})
            r.raise_for_status()
            out.append((time.perf_counter() - start) * 1000)
    return out


def inproc_latencies(settings, embedder, queries: list[str]) -> list[float]:  # type: ignore[no-untyped-def]
    from rag_ray.embedding.backends import ThreadedBackend
    from rag_ray.retrieval.service import RetrievalService
    from rag_ray.runtime import open_store
    from rag_ray.types import Principal

    service = RetrievalService(open_store(settings, embedder.dimension), ThreadedBackend(embedder))
    admin = Principal("bench-admin", "admin", "admin")

    async def run() -> list[float]:
        out = []
        for q in queries:
            start = time.perf_counter()
            await service.search(admin, q, k=5)
            out.append((time.perf_counter() - start) * 1000)
        return out

    asyncio.run(service.search(admin, "warm up", k=5))
    return asyncio.run(run())


def seed_corpus(settings, embedder, docs: list[str]) -> None:  # type: ignore[no-untyped-def]
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


def run_app(settings, batched: bool, texts: list[str], queries: list[str], total: int) -> dict:  # type: ignore[no-untyped-def]
    import httpx
    from ray import serve

    from deployments.app import build_app

    app_settings = settings.model_copy(update={"embed_batching": batched})
    serve.run(build_app(app_settings), name="bench", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{settings.api_port}"
    token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": "bench-admin-pw"},
                       timeout=60).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    result = {"embed_rps": embed_rates(url, headers, texts, total)}
    if batched:
        http_latencies(url, headers, queries[:5])  # warm-up
        result["query_ms"] = http_latencies(url, headers, queries)
    serve.delete("bench")
    return result


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=96, help="embedding requests per concurrency level")
    parser.add_argument("--query-requests", type=int, default=60)
    parser.add_argument("--docs", type=int, default=300)
    args = parser.parse_args()

    import ray
    from ray import serve

    from jobs.ray_executor import init_ray
    from rag_ray.access.bootstrap import bootstrap_admin
    from rag_ray.config import Settings
    from rag_ray.embedding.local import SentenceTransformerEmbedder
    from rag_ray.metadata import MetadataDB
    from rag_ray.store.lite_server import MilvusLiteServer, free_port

    texts = load_texts(SCIFACT / "queries.jsonl", "text", 300)
    with tempfile.TemporaryDirectory() as tmp, MilvusLiteServer(Path(tmp) / "milvus", free_port()) as milvus:
        settings = Settings(data_dir=Path(tmp), milvus_uri=milvus.uri, llm_provider="fake", llm_model="echo",  # type: ignore[call-arg]
                            admin_password="bench-admin-pw", api_port=free_port())
        embedder = SentenceTransformerEmbedder()  # one model for seeding, in-process retrieval and the raw rates
        seed_corpus(settings, embedder, load_texts(SCIFACT / "corpus.jsonl", "text", args.docs))
        bootstrap_admin(settings, MetadataDB(settings.metadata_url))
        queries = texts[: args.query_requests]
        inproc = inproc_latencies(settings, embedder, queries)  # same store, same model, no HTTP, no Serve
        raw = raw_batch_rates(embedder, texts, args.requests)
        init_ray(settings)
        serve.start(http_options={"host": "127.0.0.1", "port": settings.api_port})
        batched = run_app(settings, True, texts, queries, args.requests)
        unbatched = run_app(settings, False, texts, queries, args.requests)
        serve.shutdown()
        ray.shutdown()
    http = batched["query_ms"]
    result = {f"embed_rps_c{c}_{kind}": round(run["embed_rps"][c], 2)
              for kind, run in (("batched", batched), ("unbatched", unbatched)) for c in CONCURRENCY}
    result["batch_speedup_c32"] = round(batched["embed_rps"][32] / unbatched["embed_rps"][32], 3)
    result.update({k: round(v, 2) for k, v in raw.items()})
    result["raw_batch_gain_32"] = round(raw["raw_texts_per_s_batch32"] / raw["raw_texts_per_s_batch1"], 3)
    result["batch_efficiency_c32"] = round(result["batch_speedup_c32"] / result["raw_batch_gain_32"], 3)
    result.update(query_http_p50_ms=round(pct(http, 50), 2), query_http_p95_ms=round(pct(http, 95), 2),
                  query_inproc_p50_ms=round(pct(inproc, 50), 2), query_inproc_p95_ms=round(pct(inproc, 95), 2))
    result["http_overhead_p50_ms"] = round(result["query_http_p50_ms"] - result["query_inproc_p50_ms"], 2)
    result["requests_per_level"] = args.requests
    print(json.dumps(result))


if __name__ == "__main__":
    main()
