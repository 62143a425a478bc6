"""A per-provider circuit breaker.

closed ──N failures within window──▶ open ──cooldown──▶ half-open ──M successes──▶ closed
                                       ▲                     │
                                       └────── a failure ────┘
A rate limit (429) opens the breaker at once, for the provider's Retry-After (or the default cooldown).
The clock is injectable so tests drive the transitions without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 5
    window_s: float = 60.0
    cooldown_s: float = 30.0
    success_threshold: int = 2
    rate_limit_cooldown_s: float = 1.0  # a 429 without Retry-After


class CircuitBreaker:
    def __init__(self, config: BreakerConfig | None = None, *, clock: Clock = time.monotonic):
        self.config = config or BreakerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: deque[float] = deque()
        self._opened_until = 0.0
        self._open = False
        self._half_open_successes = 0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> BreakerState:
        if not self._open:
            return BreakerState.CLOSED
        return BreakerState.OPEN if self._clock() < self._opened_until else BreakerState.HALF_OPEN

    def allows(self) -> bool:
        """May a request go to this provider now? (half-open lets probes through)"""
        return self.state is not BreakerState.OPEN

    def remaining_cooldown(self) -> float:
        with self._lock:
            return max(0.0, self._opened_until - self._clock()) if self._open else 0.0

    def record_success(self) -> None:
        with self._lock:
            if self._state_locked() is BreakerState.HALF_OPEN:
                self._half_open_successes += 1
                if self._half_open_successes >= self.config.success_threshold:
                    self._close_locked()
            elif not self._open:
                self._failures.clear()

    def record_failure(self) -> None:
        with self._lock:
            now = self._clock()
            state = self._state_locked()
            if state is BreakerState.HALF_OPEN:
                self._open_locked(self.config.cooldown_s)
                return
            if state is BreakerState.OPEN:
                return
            self._failures.append(now)
            while self._failures and self._failures[0] <= now - self.config.window_s:
                self._failures.popleft()
            if len(self._failures) >= self.config.failure_threshold:
                self._open_locked(self.config.cooldown_s)

    def trip(self, cooldown_s: float | None = None) -> None:
        """Open now (a 429): for ``cooldown_s`` (its Retry-After) or the configured cooldown."""
        with self._lock:
            self._open_locked(self.config.cooldown_s if cooldown_s is None else cooldown_s)

    def reset(self) -> None:
        with self._lock:
            self._close_locked()

    def _open_locked(self, cooldown_s: float) -> None:
        self._open = True
        self._opened_until = self._clock() + max(0.0, cooldown_s)
        self._half_open_successes = 0
        self._failures.clear()

    def _close_locked(self) -> None:
        self._open = False
        self._opened_until = 0.0
        self._half_open_successes = 0
        self._failures.clear()

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {"state": self._state_locked().value, "recent_failures": len(self._failures),
                    "cooldown_remaining_s": round(max(0.0, self._opened_until - self._clock()), 3)
                    if self._open else 0.0}
