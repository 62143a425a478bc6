"""Ranking metrics over document rankings against graded relevance judgements (qrels)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

NDCG_DEPTH = 10
# metrics where higher is better: the ones a baseline or the switch gate compares (latency is only reported)
QUALITY_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def ndcg(ranked: Sequence[str], relevant: Mapping[str, int], depth: int = NDCG_DEPTH) -> float:
    gains = [relevant.get(d, 0) for d in ranked[:depth]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sorted(relevant.values(), reverse=True)[:depth]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    return sum(1 for d in ranked[:k] if d in relevant) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    first = next((i for i, d in enumerate(ranked[:k]) if relevant.get(d, 0) > 0), None)
    return 0.0 if first is None else 1.0 / (first + 1)


def metric_names(k: int = 10) -> tuple[str, ...]:
    """The quality metrics reported for recall/MRR cut-off ``k`` (nDCG is always @10)."""
    extra = [f"recall@{k}"] if k not in (10, 100) else []
    extra += [f"mrr@{k}"] if k != 10 else []
    return (*QUALITY_METRICS, *extra)


def query_metrics(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> dict[str, float]:
    """nDCG@10, recall@10, recall@100, MRR@10 (and recall@k, MRR@k for another ``k``) of one query."""
    out = {"ndcg@10": ndcg(ranked, relevant), "recall@10": recall(ranked, relevant, 10),
           "recall@100": recall(ranked, relevant, 100), "mrr@10": reciprocal_rank(ranked, relevant, 10)}
    if k not in (10, 100):
        out[f"recall@{k}"] = recall(ranked, relevant, k)
    if k != 10:
        out[f"mrr@{k}"] = reciprocal_rank(ranked, relevant, k)
    return out


def mean_metrics(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-metric means over queries, rounded to 4 places (what reports and baselines hold)."""
    if not rows:
        return {}
    return {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0]}


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 1) if seconds else 0.0
