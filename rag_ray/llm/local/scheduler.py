"""The local model's request queue and micro-batcher (no torch here: the model step is injected).

Each request is a ``Job``. One worker thread owns the model: it takes up to ``max_batch`` waiting jobs whose
decoding settings match (``Decoding``) and runs them as one batched generation; jobs that disagree wait for a later
batch. At most ``max_queue`` jobs wait; one more is refused at once (``ProviderRateLimited`` with ``retry_after``,
503 + ``Retry-After`` at the edge) instead of queueing behind minutes of work. A job whose caller went away
(``cancel``) or whose deadline passed never starts, and stops at the next token when already running.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from rag_ray.errors import ProviderRateLimited, ProviderServerError

FinishReason = Literal["stop", "length", "cancelled", "timeout", "error"]
DEFAULT_MAX_QUEUE = 8
DEFAULT_MAX_BATCH = 8
DEFAULT_BATCH_WAIT_S = 0.005  # requests arriving together (an ensemble, a burst) share the first batch


@dataclass(frozen=True)
class Decoding:
    """What must be equal for requests to share one batched ``generate`` call."""

    temperature: float
    repetition_penalty: float
    no_repeat_ngram_size: int
    top_p: float = 0.9

    @property
    def sample(self) -> bool:
        return self.temperature > 0


class Job:
    """One request: its prompt ids, limits and the tokens generated so far. Written by the worker thread, read by
    the caller's event loop (woken through ``call_soon_threadsafe``: per token for streams, once at the end)."""

    def __init__(self, prompt: Sequence[int], max_new: int, decoding: Decoding, *, min_new: int = 0,
                 deadline: float | None = None, stream: bool = False):
        self.prompt = list(prompt)
        self.max_new = max_new
        self.min_new = min(min_new, max_new)
        self.decoding = decoding
        self.deadline = deadline  # time.monotonic() value
        self.stream = stream
        self.tokens: list[int] = []
        self.finish: FinishReason | None = None
        self.error: Exception | None = None
        self._cancelled = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    # ---- the caller's side ----
    def cancel(self) -> None:
        self._cancelled.set()

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    async def changed(self) -> None:
        """Wait for new tokens or the end; ``TimeoutError`` at the deadline."""
        async with asyncio.timeout(self.remaining()):
            await self._changed.wait()
        self._changed.clear()

    # ---- the worker's side ----
    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def accept(self, token: int, eos_ids: Collection[int], now: float) -> bool:
        """Take the row's newest token; True when the row is done (it then contributes nothing more)."""
        if self.finish is None:
            if self.cancelled:
                self.end("cancelled")
            elif self.expired(now):
                self.end("timeout")
            elif token in eos_ids:
                self.end("stop")
            else:
                self.tokens.append(token)
                if len(self.tokens) >= self.max_new:
                    self.end("length")
                elif self.stream:
                    self._wake()
        return self.finish is not None

    def end(self, reason: FinishReason, error: Exception | None = None) -> None:
        if self.finish is None:
            self.error = error
            self.finish = reason
            self._wake()

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._changed.set)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            self.cancel()


@dataclass(frozen=True)
class LoadStatus:
    """The local model's load: generations running now, requests waiting, and totals since start."""

    active_generations: int
    queued: int
    max_queue: int
    max_batch: int
    tokens_generated: int
    batches: int
    rejected: int


class Batcher:
    """The bounded queue and the worker thread that runs ``run_batch(jobs)`` (which must end every job)."""

    def __init__(self, run_batch: Callable[[list[Job]], None], *, name: str, max_queue: int = DEFAULT_MAX_QUEUE,
                 max_batch: int = DEFAULT_MAX_BATCH, batch_wait_s: float = DEFAULT_BATCH_WAIT_S):
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be at least 1")
        self.run_batch = run_batch
        self.name = name
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self._pending: deque[Job] = deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._finished_tokens = 0
        self._batches = 0
        self._rejected = 0
        self._batch_s = 1.0  # moving average of a batch's duration: the Retry-After of a full queue

    def submit(self, job: Job) -> None:
        with self._cond:
            if len(self._pending) >= self.max_queue:
                self._rejected += 1
                raise ProviderRateLimited(f"{self.name} is busy: {len(self._pending)} requests already wait for "
                                          f"the model (max_queue {self.max_queue})", provider="local",
                                          retry_after=max(1.0, math.ceil(self._batch_s)))
            self._pending.append(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name=f"llm-batcher-{self.name}", daemon=True)
                self._worker.start()
            self._cond.notify_all()

    def withdraw(self, job: Job) -> None:
        """The caller is gone: a waiting job leaves the queue, a running one stops at its next token."""
        job.cancel()
        with self._cond:
            if job in self._pending:
                self._pending.remove(job)
                job.end("cancelled")

    def status(self) -> LoadStatus:
        with self._cond:
            running = self._running
            return LoadStatus(active_generations=sum(1 for j in running if j.finish is None),
                              queued=len(self._pending),
                              max_queue=self.max_queue, max_batch=self.max_batch,
                              tokens_generated=self._finished_tokens + sum(len(j.tokens) for j in running),
                              batches=self._batches, rejected=self._rejected)

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch:
                self._run(batch)

    def _take(self) -> list[Job]:
        """Up to ``max_batch`` live jobs sharing the oldest live job's decoding settings."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._pending))
            if len(self._pending) < self.max_batch and self.batch_wait_s > 0:
                self._cond.wait_for(lambda: len(self._pending) >= self.max_batch, timeout=self.batch_wait_s)
            self._drop_dead()
            if not self._pending:
                return []
            head = self._pending[0].decoding
            batch = [j for j in self._pending if j.decoding == head][:self.max_batch]
            for job in batch:
                self._pending.remove(job)
            self._running = batch
            return batch

    def _drop_dead(self) -> None:
        now = time.monotonic()
        for job in [j for j in self._pending if j.cancelled or j.expired(now)]:
            self._pending.remove(job)
            job.end("cancelled" if job.cancelled else "timeout")

    def _run(self, batch: list[Job]) -> None:
        start = time.perf_counter()
        try:
            self.run_batch(batch)
        except Exception as exc:  # the model failed: every caller of this batch hears it
            error = ProviderServerError(f"{self.name}: generation failed: {type(exc).__name__}: {exc}"[:2000],
                                        provider="local")
            for job in batch:
                job.end("error", error)
        finally:
            for job in batch:
                job.end("length")  # a row still open ran into the batch's longest limit
            with self._cond:
                self._finished_tokens += sum(len(j.tokens) for j in batch)
                self._batches += 1
                self._batch_s = 0.8 * self._batch_s + 0.2 * (time.perf_counter() - start)
                self._running = []
