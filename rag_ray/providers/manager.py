"""``LLMManager`` and ``EmbeddingManager``: load balancing, retries, circuit breakers, fallback, cost.

    manager = LLMManager([LLMEntry.of(openai_llm, priority=0), LLMEntry.of(local_llm, priority=1)])
    completion = await manager.generate(messages, params, strategy="least_loaded", deadline_s=30)
    async for chunk in manager.stream(messages, params): ...

Streaming fails over transparently until the first token; after it, a failure yields a final chunk with
``finish_reason="error"`` and then raises the provider error (``details["stream_interrupted"] = True``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag_ray.embedding.backends import EmbedBackend, ThreadedBackend
from rag_ray.embedding.base import Embedder
from rag_ray.errors import ProviderError
from rag_ray.llm.base import (
    LLM,
    ChatMessage,
    Completion,
    CountsGenerations,
    GenerationParams,
    StreamChunk,
    Usage,
    close_stream,
)
from rag_ray.llm.windows import WindowSpec, resolve_window
from rag_ray.providers.breaker import CircuitBreaker, Clock
from rag_ray.providers.pool import Entry, Pool
from rag_ray.providers.pricing import Price, price_for
from rag_ray.providers.retry import Deadline, RetryPolicy, Sleep
from rag_ray.types import InputType


@dataclass(eq=False)
class LLMEntry(Entry):
    llm: LLM | None = None

    @classmethod
    def of(cls, llm: LLM, *, id: str | None = None, weight: float = 1.0, priority: int = 0,
           price: Price | None = None, max_context: int | None = None,
           breaker: CircuitBreaker | None = None) -> LLMEntry:
        entry_id = id or f"{llm.provider}:{llm.model}"
        return cls(id=entry_id, llm=llm, weight=weight, priority=priority, price=price or price_for(entry_id),
                   max_context=max_context, breaker=breaker or CircuitBreaker())

    @property
    def backend(self) -> LLM:
        assert self.llm is not None
        return self.llm

    def window(self) -> WindowSpec:
        """This entry's context window: ``max_context`` from its spec, else the adapter's own, else the table."""
        return resolve_window(self.id, self.backend, self.max_context)

    @property
    def active_generations(self) -> int:
        """Generations running in the backend: its own count when it keeps one (the local model, the fake), else the
        calls in flight here. A cancelled call leaves the first only when the backend has really stopped."""
        return self.backend.active_generations if isinstance(self.backend, CountsGenerations) else self.in_flight

    def status(self) -> dict[str, Any]:
        return {**super().status(), "active_generations": self.active_generations}


@dataclass
class _OpenStream:
    iterator: AsyncIterator[StreamChunk]
    buffered: list[StreamChunk] = field(default_factory=list)


@dataclass
class ManagedStream:
    """An opened stream: the entry that serves it and its chunks (iterate or ``aclose`` them)."""

    entry: LLMEntry
    chunks: AsyncIterator[StreamChunk]


def _is_committed(chunk: StreamChunk) -> bool:
    return bool(chunk.delta) or chunk.finish_reason is not None


class LLMManager:
    """Named LLM entries behind one ``generate``/``stream`` with strategies, retries and fallback."""

    def __init__(self, entries: Sequence[LLMEntry], *, strategy: str = "round_robin",
                 policy: RetryPolicy | None = None, default_deadline_s: float = 60.0,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep):
        self.pool: Pool[LLMEntry] = Pool(entries, strategy=strategy, policy=policy,
                                         default_deadline_s=default_deadline_s, clock=clock, sleep=sleep)

    @property
    def entries(self) -> list[LLMEntry]:
        return self.pool.entries

    def entry(self, entry_id: str) -> LLMEntry:
        return self.pool.select(entry_id)[0]

    def route(self, *, strategy: str | None = None, provider: str | None = None,
              model: str | None = None) -> list[LLMEntry]:
        """The entries a call with these arguments would try, in order: the first is the one the strategy picks now
        (this advances a rotation like a call does). Pin a call to one with ``provider=entry.id``."""
        return self.pool.plan(strategy, provider, model)

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams | None = None, *,
                       strategy: str | None = None, provider: str | None = None, model: str | None = None,
                       deadline_s: float | None = None) -> Completion:
        params = params or GenerationParams()
        start = time.perf_counter()

        deadline = self.pool.deadline(deadline_s)

        async def call(entry: LLMEntry) -> Completion:
            return await entry.backend.generate(messages, budgeted(params, deadline))

        order = self.pool.plan(strategy, provider, model)
        entry, completion = await self.pool.run(order, call, deadline)
        self._account(entry, completion.usage)
        completion.cost_usd = entry.price.cost(completion.usage)
        completion.latency_ms = (time.perf_counter() - start) * 1000
        return completion

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams | None = None, *,
                     strategy: str | None = None, provider: str | None = None, model: str | None = None,
                     deadline_s: float | None = None) -> AsyncIterator[StreamChunk]:
        opened = await self.open_stream(messages, params, strategy=strategy, provider=provider, model=model,
                                        deadline_s=deadline_s)
        async for chunk in opened.chunks:
            yield chunk

    async def open_stream(self, messages: Sequence[ChatMessage], params: GenerationParams | None = None, *,
                          strategy: str | None = None, provider: str | None = None, model: str | None = None,
                          deadline_s: float | None = None) -> ManagedStream:
        """Open a stream with failover up to its first token; the result says which entry serves it."""
        params = params or GenerationParams()
        deadline = self.pool.deadline(deadline_s)

        async def open_stream(entry: LLMEntry) -> _OpenStream:
            opened = _OpenStream(entry.backend.stream(messages, budgeted(params, deadline)).__aiter__())
            try:
                while not (opened.buffered and _is_committed(opened.buffered[-1])):
                    opened.buffered.append(await opened.iterator.__anext__())
            except StopAsyncIteration:
                pass
            except BaseException:
                await close_stream(opened.iterator)
                raise
            return opened

        order = self.pool.plan(strategy, provider, model)
        entry, opened = await self.pool.run(order, open_stream, deadline)
        return ManagedStream(entry, self._relay(entry, opened))

    async def _relay(self, entry: LLMEntry, opened: _OpenStream) -> AsyncIterator[StreamChunk]:
        """After the first token: pass chunks through; a failure now ends the stream with an error."""
        entry.in_flight += 1
        emitted = 0
        try:
            for chunk in opened.buffered:
                emitted += bool(chunk.delta)
                yield self._finish(entry, chunk)
            async for chunk in opened.iterator:
                emitted += bool(chunk.delta)
                yield self._finish(entry, chunk)
        except Exception as exc:
            err = self.pool.as_provider_error(exc, entry)
            err.details = {**err.details, "stream_interrupted": True, "chunks_emitted": emitted}
            self.pool.record_failure(entry, err)
            yield StreamChunk(finish_reason="error")
            raise err from exc
        finally:
            entry.in_flight -= 1
            await close_stream(opened.iterator)

    def _finish(self, entry: LLMEntry, chunk: StreamChunk) -> StreamChunk:
        if chunk.usage is not None:
            self._account(entry, chunk.usage)
        return chunk

    @staticmethod
    def _account(entry: Entry, usage: Usage) -> None:
        entry.prompt_tokens += usage.prompt_tokens
        entry.completion_tokens += usage.completion_tokens
        entry.cost_usd += entry.price.cost(usage)

    async def check_health(self, timeout_s: float = 10.0) -> dict[str, bool]:
        """Ping every entry once (no retries, breakers untouched); ``health_based`` ranks by the result."""
        ping = [ChatMessage("user", "ping")]

        async def probe(entry: LLMEntry) -> bool:
            try:
                async with asyncio.timeout(timeout_s):
                    await entry.backend.generate(ping, GenerationParams(max_tokens=1, temperature=0.0))
                return True
            except (ProviderError, TimeoutError, OSError):
                return False

        results = await asyncio.gather(*(probe(e) for e in self.entries))
        for entry, ok in zip(self.entries, results, strict=True):
            entry.healthy = ok
        return {e.id: e.healthy for e in self.entries}

    def status(self) -> dict[str, Any]:
        entries = self.pool.status()
        return {"strategy": self.pool.default_strategy, "entries": entries,
                "total_cost_usd": round(sum(e["cost_usd"] for e in entries), 6)}


def budgeted(params: GenerationParams, deadline: Deadline) -> GenerationParams:
    """``params`` with ``timeout_s`` no longer than what the call has left: the adapter hands it to its SDK (so the
    HTTP request is aborted then) or a Serve handle to its deployment."""
    left = deadline.remaining()
    if not math.isfinite(left):
        return params
    return dataclasses.replace(params, timeout_s=min(params.timeout_s or left, left))


# ---------------------------------------------------------------------------------------------- embeddings
@dataclass(eq=False)
class EmbedderEntry(Entry):
    engine: EmbedBackend | None = None

    @classmethod
    def of(cls, embedder: Embedder, *, id: str | None = None, weight: float = 1.0, priority: int = 0,
           price: Price | None = None, breaker: CircuitBreaker | None = None) -> EmbedderEntry:
        """A synchronous embedder (run in a worker thread)."""
        return cls.over(ThreadedBackend(embedder), id=id, weight=weight, priority=priority, price=price,
                        breaker=breaker)

    @classmethod
    def over(cls, backend: EmbedBackend, *, id: str | None = None, weight: float = 1.0, priority: int = 0,
             price: Price | None = None, breaker: CircuitBreaker | None = None) -> EmbedderEntry:
        """Any ``EmbedBackend`` (``rag_ray.embedding.backends``), e.g. the server's async collection embedder."""
        entry_id = id or f"{backend.provider}:{backend.model}"
        return cls(id=entry_id, engine=backend, weight=weight, priority=priority,
                   price=price or price_for(entry_id), breaker=breaker or CircuitBreaker())

    @property
    def backend(self) -> EmbedBackend:
        assert self.engine is not None
        return self.engine


CacheKey = tuple[str, str, int, str]


class EmbeddingCache:
    """A thread-safe LRU of vectors keyed by (entry id, input type, requested size, sha256(text))."""

    def __init__(self, max_items: int = 10_000):
        self.max_items = max_items
        self._items: OrderedDict[CacheKey, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(entry_id: str, input_type: str, text: str, dimensions: int | None = None) -> CacheKey:
        """``dimensions``: the size asked of the provider (None: the model's own)."""
        return entry_id, input_type, dimensions or 0, hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: CacheKey) -> np.ndarray | None:
        with self._lock:
            vector = self._items.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, key: CacheKey, vector: np.ndarray) -> None:
        if self.max_items <= 0:
            return
        with self._lock:
            self._items[key] = vector
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"size": len(self._items), "max_items": self.max_items, "hits": self.hits,
                    "misses": self.misses}


def estimate_tokens(texts: Sequence[str]) -> int:
    """Embedders do not report usage through the protocol; ~4 characters per token is the usual estimate."""
    return sum(max(1, len(t) // 4) for t in texts)


@dataclass
class Embedded:
    """One managed embedding call: the entry that served every row, the rows as it returned them, accounting."""

    entry: EmbedderEntry
    vectors: np.ndarray
    prompt_tokens: int  # all inputs (estimated)
    cached: int = 0  # rows answered from the cache
    cost_usd: float = 0.0  # what this call's provider requests cost (cache hits are free)


class EmbeddingManager:
    """Embedder entries behind one ``embed`` (the ``Embedder`` protocol), with the LLM manager's strategies,
    retries and fallback plus an LRU cache. All rows of one call come from one entry: vectors of different
    models never mix within a call (``Embedded.entry`` says which one served it)."""

    def __init__(self, entries: Sequence[EmbedderEntry], *, strategy: str = "round_robin",
                 policy: RetryPolicy | None = None, default_deadline_s: float = 120.0, cache_size: int = 10_000,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep):
        self.pool: Pool[EmbedderEntry] = Pool(entries, strategy=strategy, policy=policy,
                                              default_deadline_s=default_deadline_s, clock=clock, sleep=sleep)
        self.cache = EmbeddingCache(cache_size)
        primary = min(self.pool.entries, key=lambda e: e.priority)
        self.provider = primary.provider
        self.model = primary.model
        self._primary = primary

    @property
    def entries(self) -> list[EmbedderEntry]:
        return self.pool.entries

    @property
    def dimension(self) -> int:
        return self._primary.backend.dimension

    async def _embed_with(self, entry: EmbedderEntry, texts: Sequence[str], input_type: InputType,
                          dimensions: int | None) -> Embedded:
        sent = dimensions if entry.backend.resizes else None
        keys = [EmbeddingCache.key(entry.id, input_type, t, sent) for t in texts]
        rows = [self.cache.get(k) for k in keys]
        missing = [i for i, v in enumerate(rows) if v is None]
        cost = 0.0
        if missing:
            fresh = await entry.backend.embed([texts[i] for i in missing], input_type=input_type, dimensions=sent)
            for row, i in enumerate(missing):
                rows[i] = fresh[row]
                self.cache.put(keys[i], fresh[row])
            usage = Usage(estimate_tokens([texts[i] for i in missing]), 0)
            cost = entry.price.cost(usage)
            entry.prompt_tokens += usage.prompt_tokens
            entry.cost_usd += cost
        vectors = np.stack([v for v in rows if v is not None]).astype(np.float32)
        return Embedded(entry, vectors, estimate_tokens(texts), len(texts) - len(missing), cost)

    async def embed_on(self, texts: Sequence[str], *, entries: Sequence[EmbedderEntry] | None = None,
                       input_type: InputType = "document", strategy: str | None = None,
                       dimensions: int | None = None, deadline_s: float | None = None) -> Embedded:
        """Embed ``texts`` (at least one) on ``entries`` (default: all), tried in plan order (priority tiers, each
        ordered by ``strategy``; open circuits last) with retries, then fallback. ``dimensions`` reaches the
        entries whose backend resizes server-side; the others return their model's size."""
        order = self.pool.plan(strategy) if entries is None else self._plan_among(entries, strategy)

        async def call(entry: EmbedderEntry) -> Embedded:
            return await self._embed_with(entry, texts, input_type, dimensions)

        _, embedded = await self.pool.run(order, call, self.pool.deadline(deadline_s))
        return embedded

    def _plan_among(self, entries: Sequence[EmbedderEntry], strategy: str | None) -> list[EmbedderEntry]:
        """``Pool.plan`` over a subset: priority tiers, each ordered by the strategy (a lone candidate is not
        ordered, so it does not advance a rotation), open circuits last."""
        chooser = self.pool.strategy(strategy)
        ordered: list[EmbedderEntry] = []
        for tier in sorted({e.priority for e in entries}):
            members = [e for e in entries if e.priority == tier]
            ordered.extend(members if len(members) == 1 else chooser.order(members))
        return [e for e in ordered if e.breaker.allows()] + [e for e in ordered if not e.breaker.allows()]

    async def aembed(self, texts: Sequence[str], *, input_type: InputType = "document", strategy: str | None = None,
                     provider: str | None = None, deadline_s: float | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        entries = self.pool.select(provider) if provider else None
        embedded = await self.embed_on(texts, entries=entries, input_type=input_type, strategy=strategy,
                                       deadline_s=deadline_s)
        return embedded.vectors

    def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        """Sync entry point (the ``Embedder`` protocol): runs ``aembed`` on a private loop."""
        return _run_sync(self.aembed(texts, input_type=input_type))

    def status(self) -> dict[str, Any]:
        entries = self.pool.status()
        return {"strategy": self.pool.default_strategy, "entries": entries, "cache": self.cache.stats(),
                "total_cost_usd": round(sum(e["cost_usd"] for e in entries), 6)}


def _run_sync(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside an event loop (sync code under async): run on a helper thread's loop.
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


__all__ = ["Embedded", "EmbedderEntry", "EmbeddingCache", "EmbeddingManager", "LLMEntry", "LLMManager"]
