"""The one retry loop: retry only ``retriable`` provider errors, exponential backoff with full jitter,
at least the provider's ``retry_after``, and never past the deadline. Sleep, clock and RNG are injectable."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from rag_ray.errors import ProviderError

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass
class RetryPolicy:
    max_retries: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 10.0
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Full jitter: uniform(0, min(max, base·2^attempt)); a provider's Retry-After is a floor."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** attempt))
        delay = self.rng.uniform(0.0, ceiling)
        return max(delay, retry_after) if retry_after is not None else delay


class Deadline:
    """An absolute point in time on an injectable monotonic clock."""

    def __init__(self, seconds: float | None, clock: Clock = time.monotonic):
        self._clock = clock
        self._at = None if seconds is None else clock() + seconds

    def remaining(self) -> float:
        return float("inf") if self._at is None else max(0.0, self._at - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0


async def retry(call: Callable[[int], Awaitable[T]], policy: RetryPolicy, *, deadline: Deadline,
                sleep: Sleep = asyncio.sleep, on_retry: Callable[[ProviderError, float], None] | None = None) -> T:
    """Run ``call(attempt)`` until it succeeds, raises a non-retriable error, runs out of retries, or the
    next wait would cross the deadline (then the last error is raised)."""
    attempt = 0
    while True:
        try:
            return await call(attempt)
        except ProviderError as err:
            if not err.retriable or attempt >= policy.max_retries:
                raise
            delay = policy.backoff(attempt, err.retry_after)
            if delay >= deadline.remaining():
                raise
            if on_retry is not None:
                on_retry(err, delay)
            await sleep(delay)
            attempt += 1
