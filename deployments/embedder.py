"""Embedding deployment: requests from many callers are batched together with ``@serve.batch``.

There is no batch wait: requests that arrive while a batch is encoding queue up and form the next batch anyway, so a
wait only delays a lone request (bench/serve.py, HAProxy + throughput-optimized, /query search over HTTP − in-process,
median of 300 paired queries: 6.2 ms with a 2 ms wait, 4.3 ms without; /embeddings at c32 unchanged within noise).
``max_batch_size`` and ``batch_wait_timeout_s`` can be changed live through the deployment's ``user_config``.

The router gathers its own concurrent requests too (``Gatherer``, ``RAG_EMBED_ROUTER_BATCHING``): 32 clients with
one text each become a few handle calls instead of 32, and every handle call costs CPU in both processes.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve
from ray.serve.exceptions import BackPressureError

from deployments.resources import reserved_cpus
from rag_ray.config import Settings
from rag_ray.embedding import create_embedder
from rag_ray.errors import Overloaded
from rag_ray.types import InputType

MAX_BATCH_SIZE = 64
BATCH_WAIT_S = 0.0  # see the module note

BatchItem = tuple[tuple[str, ...], InputType]


async def embed_grouped(requests: list[BatchItem], embed: Callable[[list[str], InputType], Awaitable[np.ndarray]],
                        dimension: int) -> list[np.ndarray]:
    """One ``embed`` call per input type for every text of every request in the batch, split back per request."""
    by_type: dict[InputType, list[int]] = {}
    for i, (_, input_type) in enumerate(requests):
        by_type.setdefault(input_type, []).append(i)
    results: list[np.ndarray] = [np.zeros((0, dimension), np.float32)] * len(requests)
    for input_type, indices in by_type.items():
        vectors = await embed([t for i in indices for t in requests[i][0]], input_type)
        offset = 0
        for i in indices:
            n = len(requests[i][0])
            results[i] = vectors[offset:offset + n]
            offset += n
    return results


def replica_threads(settings: Settings, replicas_per_node: int, reserved: float = 0.0) -> Settings:
    """The model's threads in a replica, unless ``RAG_EMBEDDING_THREADS`` says: a replica that reserves whole CPUs
    (serve_config.yaml: ``num_cpus: 1``) runs that many, as Ray sizes a worker (``OMP_NUM_THREADS``), so the
    replicas Ray packs onto a node never run more threads than it has cores. One that reserves a share of a CPU (the
    small default, so ingest jobs fit beside Serve) splits the node's cores with the replicas that may share them: two
    replicas each running torch on every core stall at each other's barriers (bench/serve.py, 2 cores, 32 one-text
    clients: one replica on 2 threads 141 texts/s, two replicas on 1 thread each 168)."""
    if settings.embedding_threads > 0:
        return settings
    if reserved >= 1:
        return settings.model_copy(update={"embedding_threads": int(reserved)})
    if replicas_per_node <= 1:
        return settings
    return settings.model_copy(update={"embedding_threads": max(1, (os.cpu_count() or 1) // replicas_per_node)})


class EmbedderDeployment:
    def __init__(self, settings: Settings, max_batch_size: int = MAX_BATCH_SIZE,
                 batch_wait_timeout_s: float = BATCH_WAIT_S, replicas_per_node: int = 1):
        sized = replica_threads(settings, replicas_per_node, reserved_cpus())
        self.embedder = create_embedder(sized)
        self.provider, self.model, self.dimension = (self.embedder.provider, self.embedder.model,
                                                     self.embedder.dimension)
        self.threads = sized.embedding_threads  # 0: every core
        self.reconfigure({"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s})

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve calls this with the deployment's ``user_config`` (serve_config.yaml), also on live updates."""
        if "max_batch_size" in user_config:
            self._embed_batched.set_max_batch_size(int(user_config["max_batch_size"]))  # type: ignore[attr-defined]
        if "batch_wait_timeout_s" in user_config:
            self._embed_batched.set_batch_wait_timeout_s(  # type: ignore[attr-defined]  # @serve.batch API
                float(user_config["batch_wait_timeout_s"]))

    def info(self) -> dict[str, object]:
        return {"provider": self.provider, "model": self.model, "dimension": self.dimension, "threads": self.threads}

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _embed_batched(self, requests: list[BatchItem]) -> list[np.ndarray]:
        return await embed_grouped(requests, self._encode, self.dimension)

    async def _encode(self, texts: list[str], input_type: InputType) -> np.ndarray:
        # on a worker thread: the replica's loop keeps taking requests (the next batch) and answering Serve's
        # health and metrics calls while the model runs (the same loop in RAY_SERVE_THROUGHPUT_OPTIMIZED mode); a
        # local model serialises its own calls, so a cancelled caller's thread still finishes before the next runs
        return await asyncio.to_thread(self.embedder.embed, texts, input_type=input_type)

    async def embed(self, texts: Sequence[str], input_type: InputType = "document") -> np.ndarray:
        return await self._embed_batched((tuple(texts), input_type))

    async def embed_unbatched(self, texts: Sequence[str], input_type: InputType = "document") -> np.ndarray:
        return await self._encode(list(texts), input_type)


class Gatherer:
    """Calls made while others are in flight travel together. A call leaves at once when nothing is in flight (no
    timer for a lone call). While others are, up to ``steady_in_flight`` calls may be in flight, but a new one first
    waits for company: its share of the texts recently under way at once (``recent_peak``, split over
    ``steady_in_flight`` calls), ``min_texts`` at most, or until its oldest text has waited ``WAIT_SHARE`` of a recent
    call's time. Beyond that only full batches (``max_texts``) leave, up to ``max_in_flight``: a heavy load keeps more
    calls in flight (more replicas busy, and the ongoing-requests count autoscaling reads goes up).

    Why the wait: sent the moment a slot was free, calls settled into a convoy under steady load. The batch that
    formed while both slots were busy went to one replica, and the other encoded the stragglers one or two at a time
    (bench/serve.py, 32 clients, two replicas: calls of 29 texts beside calls of 1–2), while the model spends ~14 ms
    on a text alone and ~7.4 ms a text in a call of 16 (one thread). The share keeps a lighter load from waiting for
    company that cannot come (16 clients send calls of ~8: a fixed 16 cost them 8% of their texts/s)."""

    WAIT_SHARE = 0.25  # of a recent call's time: the longest a free slot waits for company (idle at most ~1/5)
    RECENT = 0.2  # weight of the latest call in the running average of their times
    PEAK_DECAY_S = 2.0  # the peak of texts under way fades by e in this long: a load that eases is seen within seconds

    def __init__(self, send: Callable[[list[BatchItem]], Awaitable[list[np.ndarray]]], *, steady_in_flight: int = 2,
                 max_in_flight: int = 4, max_texts: int = MAX_BATCH_SIZE, min_texts: int = 16):
        self.send, self.max_texts, self.min_texts = send, max_texts, min_texts
        self.steady_in_flight, self.max_in_flight = steady_in_flight, max(max_in_flight, steady_in_flight)
        self.pending: list[Pending] = []
        self.in_flight = 0
        self.in_flight_texts = 0
        self.recent_peak = 0.0  # texts under way (in flight and waiting) at once, lately
        self._peak_at = 0.0
        self.call_s = 0.0  # running average of a call's time: how long company is worth waiting for
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake: asyncio.TimerHandle | None = None

    async def submit(self, item: BatchItem) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self.pending.append(Pending(item, future, loop.time()))
        self._note_under_way(loop.time())
        self._launch_ready()
        return await future

    @property
    def pending_texts(self) -> int:
        """Texts of the waiting calls whose caller is still there."""
        return sum(call.texts for call in self.pending if call.waiting)

    def _patience_left(self) -> float:
        """Seconds until the oldest waiting text has waited long enough for company (≤ 0: it has)."""
        oldest = min(call.since for call in self.pending if call.waiting)
        return oldest + self.WAIT_SHARE * self.call_s - asyncio.get_running_loop().time()

    def _may_launch(self) -> bool:
        if not any(call.waiting for call in self.pending):
            return False
        if self.in_flight == 0:
            return True
        if self.in_flight < self.steady_in_flight:
            return self.pending_texts >= self._company() or self._patience_left() <= 0
        return self.in_flight < self.max_in_flight and self.pending_texts >= self.max_texts

    def _note_under_way(self, now: float) -> None:
        faded = self.recent_peak * math.exp((self._peak_at - now) / self.PEAK_DECAY_S)
        self.recent_peak, self._peak_at = max(float(self.in_flight_texts + self.pending_texts), faded), now

    def _company(self) -> int:
        """The texts a call waits for while others are in flight: its share of the recent peak, ``min_texts`` at
        most."""
        return max(1, min(self.min_texts, math.ceil(self.recent_peak / self.steady_in_flight)))

    def _launch_ready(self) -> None:
        while self._may_launch():
            batch = self._take_batch()
            if batch:
                self._launch(batch)
        if self.in_flight < self.steady_in_flight and self.pending_texts and self._wake is None:
            self._wake = asyncio.get_running_loop().call_later(max(0.0, self._patience_left()), self._woken)

    def _woken(self) -> None:
        self._wake = None
        self._launch_ready()

    def _take_batch(self) -> list[Pending]:
        """The oldest pending calls up to ``max_texts`` texts (always at least one call, however large); calls whose
        caller has gone (cancelled) are dropped, not encoded."""
        self.pending = [call for call in self.pending if call.waiting]
        taken, texts = 0, 0
        while taken < len(self.pending) and (taken == 0 or texts + self.pending[taken].texts <= self.max_texts):
            texts += self.pending[taken].texts
            taken += 1
        batch, self.pending = self.pending[:taken], self.pending[taken:]
        return batch

    def _launch(self, batch: list[Pending]) -> None:
        self.in_flight += 1
        self.in_flight_texts += sum(call.texts for call in batch)
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)  # a reference until done: the loop keeps only weak ones
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            results = await self.send([call.item for call in batch])
            for call, result in zip(batch, results, strict=True):
                if call.waiting:
                    call.future.set_result(result)
            took = loop.time() - started
            self.call_s = took if self.call_s == 0 else (1 - self.RECENT) * self.call_s + self.RECENT * took
        except Exception as exc:
            for call in batch:
                if call.waiting:
                    call.future.set_exception(exc)
        finally:
            self.in_flight -= 1
            self.in_flight_texts -= sum(call.texts for call in batch)
            self._launch_ready()


@dataclass(slots=True)
class Pending:
    """A call waiting in the ``Gatherer``: its texts, its caller's future, and since when (the loop's clock)."""

    item: BatchItem
    future: asyncio.Future[np.ndarray]
    since: float

    @property
    def texts(self) -> int:
        return len(self.item[0])

    @property
    def waiting(self) -> bool:
        """Its caller is still there (a cancelled one is dropped, not encoded)."""
        return not self.future.done()


class HandleEmbedder:
    """The AsyncEmbedder protocol over a handle to ``EmbedderDeployment`` (used by the router). With ``gather``,
    concurrent calls in this process travel together as one handle call (``Gatherer``)."""

    def __init__(self, handle: serve.handle.DeploymentHandle, info: dict[str, object], batched: bool = True,
                 gather: bool = True):
        self.handle = handle.options(method_name="embed" if batched else "embed_unbatched")
        self.provider, self.model = str(info["provider"]), str(info["model"])
        self.dimension = int(info["dimension"])  # type: ignore[call-overload]
        self.gatherer = Gatherer(self._send) if gather and batched else None

    async def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        if self.gatherer is not None:
            return await self.gatherer.submit((tuple(texts), input_type))
        return await self._remote(list(texts), input_type)

    async def _send(self, requests: list[BatchItem]) -> list[np.ndarray]:
        return await embed_grouped(requests, self._remote, self.dimension)

    async def _remote(self, texts: list[str], input_type: InputType) -> np.ndarray:
        try:
            return await self.handle.remote(texts, input_type)
        except BackPressureError as exc:
            raise Overloaded("the embedder is at capacity; retry shortly", retry_after=exc.retry_after_s or 1.0) \
                from None
