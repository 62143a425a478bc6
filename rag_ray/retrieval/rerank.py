"""Second-stage rerankers over the fused candidates: ``RERANKERS`` registry, id ``provider[:model]``.

- ``features`` (offline, opt-in): re-scores every candidate on BOTH legs exactly (a dense and a BM25 search
  restricted to the candidate ids, under the same access filter), then recombines the min-max normalised
  scores with the query's fusion weights. First-stage fusion has to give a hit found by one leg only a 0 on
  the other leg; here every candidate gets its real dense and BM25 score. No model, two small Milvus calls.
- ``cross-encoder:<path>``: a sentence-transformers ``CrossEncoder`` loaded from a local path (no weights can
  be downloaded here, so nothing is loaded unless configured).
- ``none`` (the default, by measurement): keeps the fused order.

Measured with bench/retrieval.py (MiniLM, full corpora, nDCG@10 hybrid → hybrid+features): SciFact
0.7217 → 0.7061, AutoRAG-ko 0.9324 → 0.9342. It lowers SciFact, so it is not the default.

Post-processing shared by all: near-duplicate removal (word-shingle Jaccard) and a score threshold.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from rag_ray.errors import ConfigError
from rag_ray.registry import Registry
from rag_ray.retrieval.fusion import minmax
from rag_ray.types import SearchHit

# leg name ("dense" | "sparse"), candidate chunk ids → {chunk_id: raw leg score}
Rescorer = Callable[[str, Sequence[str]], dict[str, float]]


@dataclass
class RerankContext:
    """What a reranker may use besides the hits: the query's fusion weights and exact leg re-scoring."""

    query: str
    weights: tuple[float, ...] = (0.5, 0.5)
    rescore: Rescorer | None = None
    legs: tuple[str, ...] = ("dense", "sparse")
    extra: dict[str, Any] = field(default_factory=dict)


class Reranker(Protocol):
    name: str

    def rerank(self, hits: Sequence[SearchHit], context: RerankContext) -> list[SearchHit]:
        """All of ``hits``, reordered (best first) with new scores."""
        ...


RERANKERS: Registry[Reranker] = Registry("reranker")


class NoRerank:
    name = "none"

    def rerank(self, hits: Sequence[SearchHit], context: RerankContext) -> list[SearchHit]:
        return list(hits)


class FeatureReranker:
    """Exact dense + BM25 scores for every candidate, min-max normalised, convex-combined."""

    name = "features"

    def rerank(self, hits: Sequence[SearchHit], context: RerankContext) -> list[SearchHit]:
        if context.rescore is None or len(hits) < 2 or len(context.legs) < 2:
            return list(hits)  # one leg: its scores are already exact, nothing to combine
        ids = [h.chunk_id for h in hits]
        combined = [0.0] * len(hits)
        for leg, weight in zip(context.legs, context.weights, strict=True):
            if weight <= 0:
                continue
            scores = context.rescore(leg, ids)
            raw = [scores.get(cid) for cid in ids]
            known = [s for s in raw if s is not None]
            # A candidate missing from a restricted BM25 search shares no term with the query: its BM25 is 0.
            # (Dense re-scoring returns every candidate; a missing one ranks last.)
            floor = min([*known, 0.0])
            for i, norm in enumerate(minmax([floor if s is None else s for s in raw])):
                combined[i] += weight * norm
        order = sorted(range(len(hits)), key=lambda i: -combined[i])  # stable on ties
        return [replace(hits[i], score=combined[i]) for i in order]


class CrossEncoderReranker:
    """sentence-transformers CrossEncoder from a local model path (scores query/passage pairs)."""

    name = "cross-encoder"

    def __init__(self, model: str, *, batch_size: int = 16, max_chars: int = 2000):
        if not model:
            raise ConfigError("the cross-encoder reranker needs a local model path", field="RAG_RERANKER")
        from sentence_transformers import CrossEncoder

        self.model = model
        self.batch_size = batch_size
        self.max_chars = max_chars
        self._ce = CrossEncoder(model, device="cpu")

    def rerank(self, hits: Sequence[SearchHit], context: RerankContext) -> list[SearchHit]:
        if not hits:
            return []
        pairs = [(context.query, h.text[: self.max_chars]) for h in hits]
        scores = [float(s) for s in self._ce.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)]
        order = sorted(range(len(hits)), key=lambda i: -scores[i])
        return [replace(hits[i], score=scores[i]) for i in order]


@RERANKERS.register("none")
def _none(model: str = "", **_: Any) -> Reranker:
    return NoRerank()


@RERANKERS.register("features")
def _features(model: str = "", **_: Any) -> Reranker:
    return FeatureReranker()


@RERANKERS.register("cross-encoder")
def _cross_encoder(model: str = "", **options: Any) -> Reranker:
    return CrossEncoderReranker(model, batch_size=int(options.get("batch_size", 16)))


def create_reranker(spec: str, **options: Any) -> Reranker:
    """``"features"``, ``"none"`` or ``"cross-encoder:/path/to/model"``."""
    provider, _, model = spec.partition(":")
    return RERANKERS.create(provider.strip().lower() or "none", model.strip(), **options)


# ---- post-processing ----
_SHINGLE_WORD = re.compile(r"\w+", re.UNICODE)


def _shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = _SHINGLE_WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def drop_near_duplicates(hits: Sequence[SearchHit], threshold: float = 0.9) -> list[SearchHit]:
    """Keep the first (best) of any hits whose word-3-gram Jaccard similarity is at least ``threshold``."""
    kept: list[tuple[SearchHit, set[tuple[str, ...]]]] = []
    for hit in hits:
        shingles = _shingles(hit.text)
        if any(_jaccard(shingles, other) >= threshold for _, other in kept):
            continue
        kept.append((hit, shingles))
    return [hit for hit, _ in kept]


def _jaccard(a: set[Any], b: set[Any]) -> float:
    if not a or not b:
        return 1.0 if a == b else 0.0
    return len(a & b) / len(a | b)


def apply_threshold(hits: Sequence[SearchHit], min_score: float | None) -> list[SearchHit]:
    return list(hits) if min_score is None else [h for h in hits if h.score >= min_score]
