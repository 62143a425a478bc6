"""Batch sizes for the embedding stage: fixed, or adapted to observed throughput and memory.

``AdaptiveBatcher`` hill-climbs the model's batch size: it measures items/s over a few batches at the current
size, then moves one step (×/÷ ``step``) in the direction that last improved the rate, turning back when the rate
drops. Sizes stay within ``[minimum, maximum]``. When the process's memory passes ``memory_limit_bytes`` the size
is halved at once and the maximum lowered to it, so a job that outgrows its memory budget backs off instead of
being killed. The clock and the memory probe are injectable (tests use a fake clock).
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T")
R = TypeVar("R")

ProcessingStrategy = Literal["fifo", "size_based", "priority_based"]
HISTORY_KEPT = 32  # sizes remembered for progress reports
PROCESSING_STRATEGIES: tuple[str, ...] = ("fifo", "size_based", "priority_based")


@dataclass(frozen=True)
class BatchPolicy:
    """How an ingest job sizes its embedding batches (picklable: it travels to the Ray Data actors)."""

    size: int = 64  # the fixed size, and where adaptive batching starts
    adaptive: bool = False
    minimum: int = 8
    maximum: int = 256
    memory_limit_bytes: int | None = None  # the job's memory budget (also bounds Ray Data's object store use)

    def batcher(self) -> AdaptiveBatcher | None:
        if not self.adaptive:
            return None
        return AdaptiveBatcher(self.size, self.minimum, self.maximum, memory_limit_bytes=self.memory_limit_bytes)


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``; elsewhere the peak, which only grows)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


class AdaptiveBatcher:
    def __init__(self, initial: int, minimum: int, maximum: int, *, step: float = 2.0, probe_batches: int = 3,
                 settle_probes: int = 10, memory_limit_bytes: int | None = None,
                 memory_probe: Callable[[], int] = rss_bytes, clock: Callable[[], float] = time.perf_counter):
        if not 1 <= minimum <= maximum:
            raise ValueError(f"batch bounds must satisfy 1 <= minimum <= maximum, got {minimum}..{maximum}")
        self.minimum, self.maximum = minimum, maximum
        self.size = min(max(initial, minimum), maximum)
        self.step, self.probe_batches = step, probe_batches
        self.memory_limit_bytes, self.memory_probe, self.clock = memory_limit_bytes, memory_probe, clock
        self.settle_probes = settle_probes
        self._settled = 0
        self.direction = 1  # +1: grow, -1: shrink
        self.rates: dict[int, float] = {}  # latest items/s measured per size
        self._items = 0
        self._seconds = 0.0
        self._batches = 0
        self.history: list[int] = [self.size]  # the sizes chosen, in order (the last HISTORY_KEPT)

    def map(self, items: Sequence[T], fn: Callable[[Sequence[T]], R]) -> list[R]:
        """``fn`` over consecutive slices of ``items`` at the current size, timing each to adapt the size."""
        out, start = [], 0
        while start < len(items):
            part = items[start:start + self.size]
            began = self.clock()
            out.append(fn(part))
            self.observe(len(part), self.clock() - began)
            start += len(part)
        return out

    def observe(self, items: int, seconds: float) -> int:
        """Record one batch; returns the size to use next."""
        if self._over_memory():
            return self._shrink_for_memory()
        self._items += items
        self._seconds += max(seconds, 1e-9)
        self._batches += 1
        if self._batches >= self.probe_batches:
            self._decide(self._items / self._seconds)
        return self.size

    def _decide(self, rate: float) -> None:
        """Undo a step that made things slower; else move to the neighbouring size that is unexplored or faster,
        onwards first; stay when both neighbours are known to be slower (and look again after ``settle_probes``)."""
        self.rates[self.size] = rate
        back = self._next(self.size, -self.direction)
        if back != self.size and self.rates.get(back, 0.0) > rate:  # the step just taken made it slower: undo it
            self.direction, self._settled = -self.direction, 0
            self._move(back)
            return
        for direction in (self.direction, -self.direction):
            neighbour = self._next(self.size, direction)
            if neighbour != self.size and self.rates.get(neighbour, float("inf")) > rate:
                self.direction, self._settled = direction, 0
                self._move(neighbour)
                return
        self._settled += 1
        if self._settled >= self.settle_probes:  # the machine's load changes: look around again
            for direction in (1, -1):
                self.rates.pop(self._next(self.size, direction), None)
            self._settled = 0
        self._move(self.size)

    def _next(self, size: int, direction: int) -> int:
        moved = round(size * self.step) if direction > 0 else round(size / self.step)
        return min(max(moved, self.minimum), self.maximum)

    def _move(self, size: int) -> None:
        self.size = size
        self._items, self._seconds, self._batches = 0, 0.0, 0
        if self.history[-1] != size:
            self.history = [*self.history[-(HISTORY_KEPT - 1):], size]

    def _over_memory(self) -> bool:
        return self.memory_limit_bytes is not None and self.memory_probe() > self.memory_limit_bytes

    def _shrink_for_memory(self) -> int:
        self.maximum = max(self.minimum, self.size // 2)
        self.direction = -1
        self._move(min(self.size, self.maximum))
        return self.size
