"""Run an eval set through ``RetrievalService.search`` and score it; compare a report with a baseline.

Chunks are mapped to judged documents (a document ranks where its best chunk does). Which stored field names a
judged document: ``CorpusIds`` (an explicit doc id → corpus id map when the corpus was loaded by
``ingest_corpus``; else the chunk's ``metadata.corpus_id``, its ``doc_id``, or its source's file name without
extension, whichever the judgements use).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from rag_ray.evaluation.beir import Dataset
from rag_ray.evaluation.metrics import mean_metrics, metric_names, percentile_ms, query_metrics
from rag_ray.retrieval.fusion import FusionConfig
from rag_ray.retrieval.service import RetrievalService
from rag_ray.store.milvus import SearchStrategy
from rag_ray.types import Principal, SearchHit

# who evaluations search as: an admin sees the whole collection (no access filter, nothing masked)
EVAL_PRINCIPAL = Principal("rag-eval", "rag-eval", "admin")
DEFAULT_FETCH_K = 100  # chunks retrieved per query before mapping to documents (bench/retrieval.py's depth)


class CorpusIds:
    """Stored chunk → the corpus id the judgements use."""

    def __init__(self, judged: set[str], id_map: Mapping[str, str] | None = None):
        self.judged = judged
        self.id_map = id_map

    def __call__(self, hit: SearchHit) -> str | None:
        if self.id_map is not None:
            return self.id_map.get(hit.doc_id)
        stem = PurePosixPath(hit.source_uri.rstrip("/")).stem if hit.source_uri else ""
        candidates = [str(hit.metadata.get("corpus_id") or ""), hit.doc_id, stem, hit.source_uri]
        return next((c for c in candidates if c and c in self.judged), stem or hit.doc_id)

    def ranking(self, hits: Sequence[SearchHit]) -> list[str]:
        """Chunks → documents, best chunk first."""
        return list(dict.fromkeys(key for key in map(self, hits) if key is not None))


@dataclass
class EvalReport:
    """Quality means over the queries, latency percentiles of ``RetrievalService.search`` (query embedding
    included), and what was evaluated."""

    metrics: dict[str, float]
    queries: int
    strategy: str
    k: int
    fetch_k: int
    collection: str = ""
    embedding_model: str = ""
    dataset: str = ""
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not per_query:
            data.pop("per_query")
        return data

    def quality(self) -> dict[str, float]:
        return {name: self.metrics[name] for name in metric_names(self.k) if name in self.metrics}


async def evaluate_async(service: RetrievalService, dataset: Dataset, *, principal: Principal = EVAL_PRINCIPAL,
                         strategy: SearchStrategy | None = None, k: int = 10, fetch_k: int = DEFAULT_FETCH_K,
                         rerank: bool | None = None, fusion: FusionConfig | None = None,
                         id_map: Mapping[str, str] | None = None) -> EvalReport:
    """Every query of ``dataset`` once, in order; ``strategy=None``: the service's default."""
    ids = CorpusIds(dataset.judged, id_map)
    rows: dict[str, dict[str, float]] = {}
    seconds: list[float] = []
    for qid, text in dataset.queries.items():
        start = time.perf_counter()
        hits = await service.search(principal, text, k=fetch_k, strategy=strategy, rerank=rerank, fusion=fusion)
        seconds.append(time.perf_counter() - start)
        rows[qid] = query_metrics(ids.ranking(hits), dataset.qrels[qid], k)
    metrics = mean_metrics(list(rows.values()))
    metrics.update(p50_ms=percentile_ms(seconds, 50), p95_ms=percentile_ms(seconds, 95))
    return EvalReport(metrics, len(rows), strategy or service.default_strategy, k, fetch_k, dataset=dataset.name,
                      per_query=rows)


def evaluate(service: RetrievalService, dataset: Dataset, **options: Any) -> EvalReport:
    """``evaluate_async`` from synchronous code (a CLI command, a benchmark)."""
    return asyncio.run(evaluate_async(service, dataset, **options))


@dataclass(frozen=True)
class Regression:
    metric: str
    baseline: float
    current: float

    @property
    def drop(self) -> float:
        return round(self.baseline - self.current, 4)

    def __str__(self) -> str:
        return f"{self.metric} {self.current:.4f} < baseline {self.baseline:.4f} (-{self.drop:.4f})"


def regressions(current: Mapping[str, float], baseline: Mapping[str, Any], tolerance: float,
                metrics: Sequence[str] | None = None) -> list[Regression]:
    """Quality metrics of ``current`` more than ``tolerance`` (absolute) below ``baseline``. ``baseline``: a metrics
    mapping or a saved report (``{"metrics": {...}}``); only metrics present in both are compared."""
    base = baseline.get("metrics", baseline) if isinstance(baseline.get("metrics"), Mapping) else baseline
    names = metrics or [m for m in current if not m.endswith("_ms")]
    out = []
    for name in names:
        known = name in current and isinstance(base.get(name), int | float)
        if known and float(current[name]) < float(base[name]) - tolerance - 1e-9:
            out.append(Regression(name, float(base[name]), float(current[name])))
    return out
