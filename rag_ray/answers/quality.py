"""Per-provider answer quality: a Beta posterior over "this provider's answers are good".

Each provider (entry id ``provider:model``) starts at Beta(``PRIOR``, ``PRIOR``) (mean 0.5). A thumbs-up adds
``FEEDBACK_WEIGHT`` to α, a thumbs-down to β; an evaluation score s ∈ [0, 1] (``/generate/*`` answers) adds
``EVAL_WEIGHT``·s to α and ``EVAL_WEIGHT``·(1−s) to β — a person's vote counts more than the evaluator's guess.
The estimate is the posterior mean α/(α+β): the ``quality`` load-balancing strategy weights traffic by it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

PRIOR = 1.0
FEEDBACK_WEIGHT = 1.0
EVAL_WEIGHT = 0.5


@dataclass(frozen=True)
class Evidence:
    """What is known of one provider's answers."""

    up: int = 0
    down: int = 0
    score_sum: float = 0.0
    scored: int = 0


@dataclass(frozen=True)
class Estimate:
    alpha: float
    beta: float
    evidence: Evidence

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


def estimate(evidence: Evidence) -> Estimate:
    alpha = PRIOR + FEEDBACK_WEIGHT * evidence.up + EVAL_WEIGHT * evidence.score_sum
    beta = PRIOR + FEEDBACK_WEIGHT * evidence.down + EVAL_WEIGHT * (evidence.scored - evidence.score_sum)
    return Estimate(alpha, beta, evidence)


class QualityBook:
    """The current estimates, replaced as a whole from the answer store's evidence (thread-safe reads)."""

    def __init__(self) -> None:
        self._estimates: dict[str, Estimate] = {}
        self._lock = threading.Lock()

    def replace(self, evidence: Mapping[str, Evidence]) -> None:
        fresh = {provider: estimate(e) for provider, e in evidence.items()}
        with self._lock:
            self._estimates = fresh

    def quality(self, entry_id: str) -> float:
        """The posterior mean for ``entry_id`` (the prior's 0.5 when nothing is known)."""
        with self._lock:
            found = self._estimates.get(entry_id)
        return found.mean if found is not None else estimate(Evidence()).mean

    def snapshot(self) -> dict[str, Estimate]:
        with self._lock:
            return dict(self._estimates)
