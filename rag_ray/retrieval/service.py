"""Retrieval for a caller: embed the query, search Milvus under the caller's access filter.

Every retrieval path goes through ``RetrievalService.search``, which always builds its expression with
``retrieval_filter(principal, filters, policy)`` — the access filter AND the governance policy (by sensitivity
label) AND the caller's structured filters — and masks PII in the returned text for non-admins when the policy
says so, so the prompt and every response built from the hits only ever see masked text. Answers are generated
by ``rag_ray.generation.rag.RagPipeline``, which masks them with ``answer_masker``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from rag_ray.embedding.base import AsyncEmbedder
from rag_ray.enrich.policy import GovernancePolicy, mask_hit_text, should_mask
from rag_ray.errors import InvalidInput
from rag_ray.retrieval.filters import retrieval_filter
from rag_ray.retrieval.fusion import FusionConfig
from rag_ray.retrieval.rerank import Reranker
from rag_ray.retrieval.search import HybridSearcher, SearchOptions
from rag_ray.store.milvus import ChunkStore, SearchStrategy
from rag_ray.types import Principal, SearchHit

MAX_QUERY_CHARS = 4000
DEFAULT_K = 5  # passages per question when the caller does not say; every RAG route uses it


class RetrievalService:
    """Searches route through ``HybridSearcher`` (fusion defaults: ``FusionConfig()``). No reranker by default:
    the offline ``FeatureReranker`` lowered SciFact nDCG@10 (bench/retrieval.py); pass one to enable it."""

    def __init__(self, store: ChunkStore, embedder: AsyncEmbedder, *, max_k: int = 100,
                 policy: GovernancePolicy | None = None, fusion: FusionConfig | None = None,
                 reranker: Reranker | None = None, options: SearchOptions | None = None):
        self.store = store
        self.embedder = embedder
        self.max_k = max_k
        self.policy = policy  # None: no governance (ACL only, nothing masked)
        self.searcher = HybridSearcher(store, embedder, fusion=fusion, reranker=reranker, options=options)

    def _check(self, query: str, k: int) -> None:
        if not query or not query.strip():
            raise InvalidInput("query must not be empty", field="query")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidInput(f"query longer than {MAX_QUERY_CHARS} characters", field="query")
        if not 1 <= k <= self.max_k:
            raise InvalidInput(f"k must be between 1 and {self.max_k}", field="k")

    @property
    def default_strategy(self) -> SearchStrategy:
        """Hybrid where the server has BM25 (best on both benchmarks), dense where it does not."""
        return "hybrid" if self.store.supports_bm25 else "dense"

    async def search(self, principal: Principal, query: str, *, k: int = DEFAULT_K,
                     strategy: SearchStrategy | None = None, filters: Any = None, rerank: bool | None = None,
                     fusion: FusionConfig | None = None) -> list[SearchHit]:
        """``strategy=None`` picks ``default_strategy``; ``rerank=None`` reranks when a reranker is configured;
        ``fusion`` overrides the hybrid weights."""
        self._check(query, k)
        strategy = strategy or self.default_strategy
        expr = retrieval_filter(principal, filters, self.policy, keyed_groups=self.store.keyed_groups)
        hits = await self.searcher.search(query, expr, k=k, strategy=strategy, fusion=fusion, rerank=rerank)
        return self.masked_hits(principal, hits)

    def masked_hits(self, principal: Principal, hits: list[SearchHit]) -> list[SearchHit]:
        """Hits as ``principal`` may see them: PII masked in the text unless they are an admin or its owner."""
        if self.policy is None:
            return hits
        policy = self.policy
        return [dataclasses.replace(h, text=mask_hit_text(h.text, principal, policy, h.metadata.get("owner_id")))
                for h in hits]

    def masked_answer(self, principal: Principal, text: str | None) -> str | None:
        """Generated text as ``principal`` may see it (an answer may quote PII from the query or the model)."""
        if self.policy is None or text is None:
            return text
        return mask_hit_text(text, principal, self.policy)

    def answer_masker(self, principal: Principal) -> Callable[[str], str] | None:
        """What generated text goes through before ``principal`` sees it; None when nothing would be masked."""
        policy = self.policy
        if policy is None or not should_mask(principal, policy):
            return None
        return lambda text: mask_hit_text(text, principal, policy)

