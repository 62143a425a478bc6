"""The server follows the alias: each search runs on the collection the alias points at, with that collection's
embedding model, so a switch (or a rollback) done by another process takes effect without a restart and no query
mixes one model's query vector with another model's index.

The alias is looked up at most every ``refresh_s`` seconds (``RAG_INDEX_REFRESH_S``; 0: on every search). The
concrete collection is searched by its own name, so a query that started before a switch finishes on the collection
it embedded for; a search that fails because the live collection moved (a switch, the adoption of a collection from
before aliases, a dropped standby) is retried once on the new live collection, waiting up to ``MOVE_WAIT_S`` for it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rag_ray.embedding.base import AsyncEmbedder
from rag_ray.errors import StoreError
from rag_ray.index.catalog import IndexCatalog
from rag_ray.retrieval.service import RetrievalService
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Principal, SearchHit

EmbedderFor = Callable[[str], AsyncEmbedder]  # "provider:model" → an embedder for it
MOVE_WAIT_S = 0.5  # how long a failed search looks for the live collection to have moved
MOVE_POLL_S = 0.02


@dataclass(frozen=True)
class Serving:
    collection: str
    store: ChunkStore
    embedder: AsyncEmbedder


class LiveIndex:
    """Which collection the alias ``alias`` points at, with a store and embedder for it (built once per
    collection). ``base_embedder`` serves its own model; other models come from ``embedder_for``."""

    def __init__(self, client: Any, alias: str, base_embedder: AsyncEmbedder, embedder_for: EmbedderFor, *,
                 refresh_s: float = 1.0):
        self.catalog = IndexCatalog(client, alias)
        self.base_embedder = base_embedder
        self.embedder_for = embedder_for
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._name: str | None = None
        self._checked = float("-inf")
        self._serving: dict[str, Serving] = {}
        self._embedders: dict[str, AsyncEmbedder] = {}

    def current(self) -> Serving | None:
        """What to search now; None while there is no alias (``RAG_COLLECTION`` is the collection itself)."""
        name = self._resolve()
        return None if name is None else self._serving_for(name)

    def invalidate(self) -> None:
        with self._lock:
            self._checked = float("-inf")

    def _resolve(self) -> str | None:
        now = time.monotonic()
        with self._lock:
            if now - self._checked < self.refresh_s:
                return self._name
        name = self.catalog.live_name()
        with self._lock:
            self._name, self._checked = name, now
        return name

    def _serving_for(self, name: str) -> Serving:
        with self._lock:
            found = self._serving.get(name)
        if found is not None:
            return found
        info = self.catalog.info(name, rows=False)
        model = info.embedding_model
        store = self.catalog.open(name, info.dimension, model)
        serving = Serving(name, store, self._embedder(model))
        with self._lock:
            self._serving[name] = serving
        return serving

    def _embedder(self, model: str | None) -> AsyncEmbedder:
        base = self.base_embedder
        if model is None or model.lower() == f"{base.provider}:{base.model}".lower():
            return base
        with self._lock:
            found = self._embedders.get(model.lower())
        if found is None:
            found = self.embedder_for(model)
            with self._lock:
                self._embedders[model.lower()] = found
        return found


class FollowingRetrieval(RetrievalService):
    """``RetrievalService`` over whatever collection the alias points at (same policy, fusion, reranker and options
    for every collection)."""

    def __init__(self, store: ChunkStore, embedder: AsyncEmbedder, *, live: LiveIndex, **options: Any):
        super().__init__(store, embedder, **options)
        self.live = live

    def on(self, serving: Serving) -> RetrievalService:
        searcher = self.searcher
        return RetrievalService(serving.store, serving.embedder, max_k=self.max_k, policy=self.policy,
                                fusion=searcher.fusion, reranker=searcher.reranker, options=searcher.options)

    async def search(self, principal: Principal, query: str, **options: Any) -> list[SearchHit]:
        try:
            serving = await asyncio.to_thread(self.live.current)  # a Milvus call when the view is due a refresh
        except StoreError:  # the alias is changing hands (an adoption: renamed, not yet aliased)
            found, serving = await self._next_live(None, lookup_failed=True)
            if not found:
                raise
        try:
            return await self._search(serving, principal, query, options)
        except StoreError:
            moved, now = await self._next_live(serving, lookup_failed=False)
            if not moved:
                raise
            return await self._search(now, principal, query, options)

    async def _search(self, serving: Serving | None, principal: Principal, query: str,
                      options: dict[str, Any]) -> list[SearchHit]:
        if serving is None:
            return await super().search(principal, query, **options)
        return await self.on(serving).search(principal, query, **options)

    async def _next_live(self, failed: Serving | None, *, lookup_failed: bool) -> tuple[bool, Serving | None]:
        """What to search after a failure, waiting up to ``MOVE_WAIT_S``: after a failed lookup, the first live
        collection that resolves; after a failed search, a live collection other than ``failed`` (a switch, the
        adoption of a pre-alias collection — for a few milliseconds neither name answers — or a dropped standby).
        (False, None) when nothing moved."""
        failed_name = failed.collection if failed is not None else None
        deadline = time.monotonic() + MOVE_WAIT_S
        while True:
            self.live.invalidate()
            try:
                now = await asyncio.to_thread(self.live.current)
            except StoreError:
                pass  # still changing hands
            else:
                if lookup_failed or (now.collection if now is not None else None) != failed_name:
                    return True, now
            if time.monotonic() >= deadline:
                return False, None
            await asyncio.sleep(MOVE_POLL_S)
