"""The search-strategy layer: dense | sparse | hybrid, client-side fusion, optional reranking.

Every Milvus call made here — both legs of a hybrid search and the reranker's exact re-scoring —
carries the caller's expression (``retrieval_filter``: access filter AND user filters); the searcher
never builds or widens it, it only ANDs an ``id in [...]`` restriction onto it for re-scoring.

Servers without BM25 (Milvus < 2.5, e.g. 2.3.5): ``sparse`` and ``hybrid`` raise ``InvalidInput`` naming
``search_strategy`` before any work is done. We chose a clear capability error over a client-side sparse
encoder: a client-side BM25 needs corpus statistics the client does not have, and a silent fallback to
dense would hide a 0.06-vs-0.94 nDCG@10 difference on Korean (see bench/retrieval.py).

Defaults, measured with bench/retrieval.py (all-MiniLM-L6-v2, full corpora, 800/100 chunks, nDCG@10):
| method                               | SciFact | AutoRAG-ko |
| dense                                | 0.6752  | 0.0635     |
| sparse (BM25 on the analysed field)  | 0.6516  | 0.9391     |
| hybrid RRF 50/50                     | 0.7018  | 0.4084     |
| hybrid weighted 0.5 (ko: 0.1) DEFAULT| 0.7217  | 0.9324     |
| + features reranker                  | 0.7061  | 0.9342     |
Korean dense weight sweep (weighted): 0.0 → 0.939, 0.1 → 0.932, 0.2 → 0.932, 0.3 → 0.928, 0.5 → 0.688.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rag_ray.config import Settings
from rag_ray.errors import InvalidInput
from rag_ray.retrieval.fusion import FusionConfig, fuse
from rag_ray.retrieval.rerank import RerankContext, Reranker, create_reranker, drop_near_duplicates
from rag_ray.store.filters import and_all, literal_list
from rag_ray.store.milvus import ChunkStore, SearchStrategy
from rag_ray.types import InputType, SearchHit

STRATEGIES: tuple[str, ...] = ("dense", "sparse", "hybrid")
MAX_RERANK_DEPTH = 200  # an ``id in [...]`` list stays under filters.MAX_IN_VALUES


class QueryEmbedder(Protocol):
    async def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray: ...


@dataclass(frozen=True)
class SearchOptions:
    # hits per leg for hybrid fusion (at least k). Each leg's cost grows with it, its value does not: nDCG@10 at k=10
    # on the full corpora (Milvus Lite), 100 → 40 per leg: SciFact 0.7152 → 0.7139, AutoRAG-ko 0.9324 → 0.9368, search
    # p50 80 → 59 ms and 52 → 25 ms (20: 0.7104 / 0.9380; the evaluation benches ask k=100, so they fetch 100)
    candidates: int = 40
    rerank_depth: int = 50  # fused candidates handed to the reranker
    dedupe_threshold: float | None = None  # word-3-gram Jaccard; None keeps near-duplicates
    min_score: float | None = None  # drop final hits scoring below this (scale depends on the stage)


def fusion_from_settings(settings: Settings) -> FusionConfig:
    korean = settings.fusion_korean_dense_weight
    return FusionConfig(method=settings.fusion_method, dense_weight=settings.fusion_dense_weight,
                        korean_dense_weight=None if korean < 0 else korean, rrf_k=settings.rrf_k)


def reranker_from_settings(settings: Settings) -> Reranker | None:
    reranker = create_reranker(settings.reranker)
    return None if reranker.name == "none" else reranker


def options_from_settings(settings: Settings) -> SearchOptions:
    return SearchOptions(candidates=settings.hybrid_candidates, rerank_depth=settings.rerank_depth)


def check_strategy(store: ChunkStore, strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise InvalidInput(f"search_strategy must be one of {', '.join(STRATEGIES)}", field="search_strategy")
    if strategy != "dense" and not store.supports_bm25:
        raise InvalidInput(f"search_strategy {strategy!r} needs BM25, which this Milvus server lacks "
                           "(Milvus 2.5+ or Milvus Lite); use 'dense'", field="search_strategy")


class HybridSearcher:
    def __init__(self, store: ChunkStore, embedder: QueryEmbedder, *, fusion: FusionConfig | None = None,
                 reranker: Reranker | None = None, options: SearchOptions | None = None):
        self.store = store
        self.embedder = embedder
        self.fusion = fusion or FusionConfig()
        self.reranker = reranker
        self.options = options or SearchOptions()

    async def search(self, query: str, expr: str, *, k: int = 5, strategy: SearchStrategy = "dense",
                     fusion: FusionConfig | None = None, rerank: bool | None = None) -> list[SearchHit]:
        """Top ``k`` chunks for ``query`` within ``expr``. ``rerank=None`` reranks when a reranker is set."""
        check_strategy(self.store, strategy)
        fusion = fusion or self.fusion
        # `enable_reranking: true` without a configured reranker (RAG_RERANKER) searches unreranked: the only
        # offline reranker lowered SciFact nDCG@10, so none is on by default (see bench/retrieval.py).
        reranker = self.reranker if rerank is not False else None
        opts = self.options
        depth = max(k, opts.rerank_depth) if reranker else k
        vector = None
        if strategy != "sparse":
            vector = (await self.embedder.embed([query], input_type="query"))[0]
        if strategy == "hybrid":
            fetch = max(depth, opts.candidates)
            dense, sparse = await asyncio.gather(self._leg("dense", query, vector, fetch, expr),
                                                 self._leg("sparse", query, vector, fetch, expr))
            hits = fuse(dense, sparse, fusion, query)[:depth]
            legs: tuple[str, ...] = ("dense", "sparse")
            weights: tuple[float, ...] = fusion.weights_for(query)
        else:
            hits = await self._leg(strategy, query, vector, depth, expr)
            legs, weights = (strategy,), (1.0,)
        if reranker is not None:
            context = RerankContext(query, weights, self._rescorer(query, vector, expr), legs)
            hits = await asyncio.to_thread(reranker.rerank, hits[:MAX_RERANK_DEPTH], context)
        if opts.dedupe_threshold is not None:
            hits = drop_near_duplicates(hits, opts.dedupe_threshold)
        if opts.min_score is not None:
            hits = [h for h in hits if h.score >= opts.min_score]
        return hits[:k]

    async def _leg(self, leg: str, query: str, vector: Any, limit: int, expr: str) -> list[SearchHit]:
        return await asyncio.to_thread(self.store.search, vector=vector, text=query, k=limit, expr=expr,
                                       strategy=leg)  # type: ignore[arg-type]

    def _rescorer(self, query: str, vector: Any, expr: str) -> Any:
        def rescore(leg: str, ids: Sequence[str]) -> dict[str, float]:
            if not ids or (leg == "dense" and vector is None):
                return {}
            restricted = and_all(expr, f"id in {literal_list(list(ids))}")
            hits = self.store.search(vector=vector, text=query, k=len(ids), expr=restricted,
                                     strategy=leg)  # type: ignore[arg-type]
            return {h.chunk_id: h.score for h in hits}

        return rescore
