"""Load-balancing strategies. Each orders the candidates of one priority tier: the manager tries them in
that order (the first is the pick, the rest are the fallbacks). Strategies live in a registry by name."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

from rag_ray.providers.breaker import BreakerState
from rag_ray.registry import Registry


class Candidate(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def weight(self) -> float: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def ewma_ms(self) -> float | None: ...
    @property
    def breaker_state(self) -> BreakerState: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def blended_price(self) -> float: ...


C = TypeVar("C", bound=Candidate)


class Strategy(Protocol):
    name: str

    def order(self, candidates: Sequence[C]) -> list[C]: ...


STRATEGIES: Registry[Strategy] = Registry("load-balancing strategy")


class RoundRobin:
    name = "round_robin"

    def __init__(self, **_: object):
        self._counter = itertools.count()

    def order(self, candidates: Sequence[C]) -> list[C]:
        if not candidates:
            return []
        start = next(self._counter) % len(candidates)
        return [*candidates[start:], *candidates[:start]]


class WeightedRandom:
    """Weighted sampling without replacement (Efraimidis–Spirakis keys u^(1/w))."""

    name = "random"

    def __init__(self, rng: random.Random | None = None, **_: object):
        self._rng = rng or random.Random()

    def order(self, candidates: Sequence[C]) -> list[C]:
        def key(c: C) -> float:
            weight = max(c.weight, 1e-9)
            return self._rng.random() ** (1.0 / weight)

        return sorted(candidates, key=key, reverse=True)


class _SortedBy:
    """Stable sort by a score (lower is better); ties keep configuration order."""

    name = "sorted"

    def __init__(self, **_: object):
        pass

    def score(self, c: Candidate) -> tuple[float, ...]:
        raise NotImplementedError

    def order(self, candidates: Sequence[C]) -> list[C]:
        return sorted(candidates, key=self.score)


class LeastLoaded(_SortedBy):
    name = "least_loaded"

    def score(self, c: Candidate) -> tuple[float, ...]:
        return (c.in_flight / max(c.weight, 1e-9),)


class LatencyBased(_SortedBy):
    """Lowest EWMA latency first; an entry never measured goes first so it gets measured."""

    name = "latency_based"

    def score(self, c: Candidate) -> tuple[float, ...]:
        return (-1.0 if c.ewma_ms is None else c.ewma_ms,)


_BREAKER_RANK = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class HealthBased(_SortedBy):
    """Closed breakers and passing health checks first, then least loaded."""

    name = "health_based"

    def score(self, c: Candidate) -> tuple[float, ...]:
        return (_BREAKER_RANK[c.breaker_state], 0 if c.healthy else 1, c.in_flight)


class CostOptimized(_SortedBy):
    name = "cost_optimized"

    def score(self, c: Candidate) -> tuple[float, ...]:
        price = c.blended_price
        return (price if math.isfinite(price) else float("inf"),)


class QualityScores(Protocol):
    def quality(self, entry_id: str) -> float:
        """The estimated share of good answers of ``entry_id``, in (0, 1)."""
        ...


class QualityBased:
    """Traffic in proportion to ``weight × quality²`` (quality: the estimated share of good answers,
    ``rag_ray.answers.quality``, from feedback and evaluation scores), spread deterministically by smooth weighted
    round robin. Squaring sharpens the preference (quality 0.9 vs 0.3: 90 % vs 10 % of the traffic, not 75/25) yet
    leaves every provider some traffic, so new evidence can redeem it. The fallbacks after the pick go best first.
    Without ``scores`` every entry counts as equally good (plain weighted round robin)."""

    name = "quality"
    sharpness = 2.0

    def __init__(self, scores: QualityScores | None = None, *, floor: float = 0.01, **_: object):
        self.scores = scores
        self.floor = floor
        self._credit: dict[str, float] = {}

    def share(self, c: Candidate) -> float:
        quality = self.scores.quality(c.id) if self.scores is not None else 1.0
        return max(c.weight, 1e-9) * max(quality, self.floor) ** self.sharpness

    def order(self, candidates: Sequence[C]) -> list[C]:
        if not candidates:
            return []
        shares = {c.id: self.share(c) for c in candidates}
        for c in candidates:
            self._credit[c.id] = self._credit.get(c.id, 0.0) + shares[c.id]
        pick = max(candidates, key=lambda c: self._credit[c.id])
        self._credit[pick.id] -= sum(shares.values())
        rest = sorted((c for c in candidates if c is not pick), key=lambda c: -shares[c.id])
        return [pick, *rest]


for _cls in (RoundRobin, WeightedRandom, LeastLoaded, LatencyBased, HealthBased, CostOptimized, QualityBased):
    STRATEGIES.register(_cls.name)(_cls)


def create_strategy(name: str, **options: object) -> Strategy:
    return STRATEGIES.create(name, **options)
