"""Retrieval for a caller: embed the query, search Milvus under the caller's access filter, answer.

Every retrieval path goes through ``RetrievalService.search``, which always builds its expression with
``retrieval_filter(principal, filters, policy)`` — the access filter AND the governance policy (by sensitivity
label) AND the caller's structured filters — and masks PII in the returned text for non-admins when the policy
says so, so the prompt and every response built from the hits only ever see masked text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rag_ray.embedding.base import Embedder
from rag_ray.enrich.policy import GovernancePolicy, mask_hit_text
from rag_ray.errors import InvalidInput
from rag_ray.llm.base import ChatMessage, Completion, GenerationParams
from rag_ray.retrieval.fusion import FusionConfig
from rag_ray.retrieval.rerank import Reranker
from rag_ray.retrieval.search import HybridSearcher, SearchOptions
from rag_ray.store.filters import retrieval_filter
from rag_ray.store.milvus import ChunkStore, SearchStrategy
from rag_ray.types import InputType, Principal, SearchHit

MAX_QUERY_CHARS = 4000


class AsyncEmbedder(Protocol):
    provider: str
    model: str
    dimension: int

    async def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray: ...


class ThreadedEmbedder:
    """Runs a synchronous embedder in a worker thread so the event loop stays responsive."""

    def __init__(self, embedder: Embedder):
        self.inner = embedder
        self.provider, self.model, self.dimension = embedder.provider, embedder.model, embedder.dimension

    async def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        return await asyncio.to_thread(self.inner.embed, list(texts), input_type=input_type)


class Generator(Protocol):
    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams | None = None, *,
                       provider: str | None = None, model: str | None = None) -> Completion: ...


@dataclass
class RagAnswer:
    answer: str | None
    sources: list[SearchHit]
    completion: Completion | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"answer": self.answer, "sources": [h.to_dict() for h in self.sources],
                               "timings_ms": self.timings_ms}
        if self.completion is not None:
            out.update(provider=self.completion.provider, model=self.completion.model,
                       usage=self.completion.usage.to_dict())
        return out


RAG_SYSTEM_PROMPT = ("You answer questions using only the numbered context passages. Cite passages like [1]. "
                     "If the context does not contain the answer, say you do not know.")


def build_rag_messages(query: str, hits: Sequence[SearchHit], max_context_chars: int = 6000) -> list[ChatMessage]:
    parts, used = [], 0
    for i, hit in enumerate(hits, start=1):
        text = hit.text[: max(0, max_context_chars - used)]
        if not text:
            break
        parts.append(f"[{i}] {text}")
        used += len(text)
    context = "\n\n".join(parts) or "(no context found)"
    return [ChatMessage("system", RAG_SYSTEM_PROMPT),
            ChatMessage("user", f"Context:\n{context}\n\nQuestion: {query}\nAnswer:")]


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

    async def search(self, principal: Principal, query: str, *, k: int = 5, strategy: SearchStrategy | None = None,
                     filters: Any = None, rerank: bool | None = None, fusion: FusionConfig | None = None
                     ) -> list[SearchHit]:
        """``strategy=None`` picks ``default_strategy``; ``rerank=None`` reranks when a reranker is configured;
        ``fusion`` overrides the hybrid weights."""
        self._check(query, k)
        strategy = strategy or self.default_strategy
        expr = retrieval_filter(principal, filters, self.policy)
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

    async def answer(self, principal: Principal, query: str, generator: Generator, *, k: int = 5,
                     strategy: SearchStrategy | None = None, filters: Any = None,
                     params: GenerationParams | None = None, provider: str | None = None,
                     model: str | None = None, rerank: bool | None = None,
                     fusion: FusionConfig | None = None) -> RagAnswer:
        start = time.perf_counter()
        hits = await self.search(principal, query, k=k, strategy=strategy, filters=filters, rerank=rerank,
                                 fusion=fusion)
        searched = time.perf_counter()
        completion = await generator.generate(build_rag_messages(query, hits), params or GenerationParams(
            temperature=0.0, max_tokens=256), provider=provider, model=model)
        done = time.perf_counter()
        return RagAnswer(self.masked_answer(principal, completion.text), hits, completion,
                         {"retrieval": (searched - start) * 1000, "generation": (done - searched) * 1000})
