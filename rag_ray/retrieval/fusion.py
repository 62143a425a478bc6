"""Client-side fusion of the dense and the sparse (BM25) result lists.

Fusing in the client rather than with Milvus's ``hybrid_search`` rankers keeps the weights configurable
per collection and per query language, and works the same on every server that can run the two legs
(including servers without ``hybrid_search``). Each leg is searched with the same access filter.

- ``rrf``: reciprocal rank fusion, ``sum_i w_i / (k + rank_i)`` (rank from 1).
- ``weighted``: each leg's scores min-max normalised to [0, 1] over that leg's results, then
  ``sum_i w_i * norm_i``; a hit missing from a leg scores 0 there (it ranked below that leg's cut).

Language-aware defaults: Korean queries lean on BM25 because the lexical field is morpheme-analysed
(``rag_ray.text.korean``), and the default English embedder knows no Korean. Numbers behind the
defaults are in ``bench/retrieval.py``'s output and the note in ``rag_ray/retrieval/search.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from rag_ray.errors import InvalidInput
from rag_ray.text.korean import has_hangul
from rag_ray.types import SearchHit

FusionMethod = Literal["rrf", "weighted"]
FUSION_METHODS: tuple[str, ...] = ("rrf", "weighted")
# A query is "Korean" when at least this share of its letters is Hangul ("KOSPI 200 지수" is 2/7).
KOREAN_MIN_RATIO = 0.25


@dataclass(frozen=True)
class FusionConfig:
    """How to fuse the two legs. ``dense_weight`` is the dense share; BM25 gets ``1 - dense_weight``.

    ``korean_dense_weight`` replaces ``dense_weight`` for queries that are mostly Hangul.
    """

    method: FusionMethod = "weighted"
    dense_weight: float = 0.5
    korean_dense_weight: float | None = 0.1
    rrf_k: int = 60

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise InvalidInput(f"fusion method must be one of {', '.join(FUSION_METHODS)}", field="fusion")
        for name in ("dense_weight", "korean_dense_weight"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise InvalidInput(f"{name} must be between 0 and 1", field=f"fusion.{name}")
        if self.rrf_k < 1:
            raise InvalidInput("rrf_k must be at least 1", field="fusion.rrf_k")

    def weights_for(self, query: str) -> tuple[float, float]:
        """(dense, sparse) weights for ``query``."""
        dense = self.dense_weight
        if self.korean_dense_weight is not None and has_hangul(query, min_ratio=KOREAN_MIN_RATIO):
            dense = self.korean_dense_weight
        return dense, 1.0 - dense


def rrf(legs: Sequence[Sequence[SearchHit]], weights: Sequence[float] | None = None, k: int = 60
        ) -> list[SearchHit]:
    """Reciprocal rank fusion of ranked lists (best first). Ties keep first-seen order."""
    weights = _weights(legs, weights)
    scores: dict[str, float] = {}
    first: dict[str, SearchHit] = {}
    for leg, weight in zip(legs, weights, strict=True):
        for rank, hit in enumerate(leg, start=1):
            first.setdefault(hit.chunk_id, hit)
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight / (k + rank)
    return _ranked(first, scores)


def minmax(values: Sequence[float]) -> list[float]:
    """Scale to [0, 1]; a constant list maps to all ones (every hit is the best of its leg)."""
    if not values:
        return []
    low, high = min(values), max(values)
    if high - low <= 1e-12:
        return [1.0] * len(values)
    return [(v - low) / (high - low) for v in values]


def weighted(legs: Sequence[Sequence[SearchHit]], weights: Sequence[float] | None = None) -> list[SearchHit]:
    """Convex combination of per-leg min-max normalised scores."""
    weights = _weights(legs, weights)
    scores: dict[str, float] = {}
    first: dict[str, SearchHit] = {}
    for leg, weight in zip(legs, weights, strict=True):
        raw = [h.score for h in leg]
        if raw and raw[0] < raw[-1]:  # a distance (lower is better) list, ranked best first: flip it
            raw = [-v for v in raw]
        for hit, norm in zip(leg, minmax(raw), strict=True):
            first.setdefault(hit.chunk_id, hit)
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight * norm
    return _ranked(first, scores)


def fuse(dense: Sequence[SearchHit], sparse: Sequence[SearchHit], config: FusionConfig, query: str
         ) -> list[SearchHit]:
    weights = config.weights_for(query)
    if config.method == "rrf":
        return rrf([dense, sparse], weights, k=config.rrf_k)
    return weighted([dense, sparse], weights)


def _weights(legs: Sequence[Sequence[SearchHit]], weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * len(legs)
    if len(weights) != len(legs):
        raise InvalidInput(f"{len(weights)} fusion weights for {len(legs)} result lists", field="fusion.weights")
    if any(w < 0 for w in weights):
        raise InvalidInput("fusion weights must not be negative", field="fusion.weights")
    return list(weights)


def _ranked(first: dict[str, SearchHit], scores: dict[str, float]) -> list[SearchHit]:
    order = sorted(first, key=lambda cid: -scores[cid])  # stable: ties keep first-seen order
    return [replace(first[cid], score=scores[cid]) for cid in order]
