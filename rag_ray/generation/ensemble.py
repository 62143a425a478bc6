"""High-quality mode: N candidates (different providers, or temperature-varied samples of one), scored, filtered,
compared for consensus, and one selected.

Failures are per candidate: a provider that errors or times out is reported on its ``Candidate`` and the ensemble
goes on; only when every candidate fails is ``ProviderUnavailable`` raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rag_ray.errors import InvalidInput, ProviderUnavailable
from rag_ray.generation.consensus import SELECTORS, ConsensusResult, analyse, select
from rag_ray.generation.evaluation import ProviderQualityTracker, QualityThresholds, ResponseEvaluator
from rag_ray.generation.prompts import EngineeredPrompt
from rag_ray.generation.single import Candidate, Timings, as_source, run_candidate
from rag_ray.llm.base import GenerationParams

# Repeated samples of one provider use these temperature offsets in turn (clipped to [0, 2]).
TEMPERATURE_OFFSETS = (0.0, 0.3, -0.3, 0.6, -0.6)


@dataclass
class EnsembleConfig:
    size: int = 3
    candidate_timeout_s: float = 30.0
    ensemble_timeout_s: float = 90.0
    parallel: bool = True
    consensus_threshold: float = 0.7
    selection_method: str = "consensus_weighted"


@dataclass(frozen=True)
class CandidatePlan:
    provider: str | None
    temperature: float


@dataclass
class EnsembleResult:
    best: Candidate
    candidates: list[Candidate]
    consensus: ConsensusResult
    consensus_score: float
    selection_method: str
    providers_used: list[str]
    timings: Timings
    eligible: list[Candidate] = field(default_factory=list)  # the candidates consensus and selection looked at
    warnings: list[str] = field(default_factory=list)

    @property
    def consensus_reached(self) -> bool:
        return self.consensus.reached

    @property
    def clusters(self) -> list[list[int]]:
        """Consensus clusters as indices into ``candidates``, biggest first."""
        position = {id(c): i for i, c in enumerate(self.candidates)}
        return [[position[id(self.eligible[i])] for i in group] for group in self.consensus.clusters]


def plan_candidates(provider_ids: Sequence[str], size: int, base_temperature: float,
                    weights: dict[str, float] | None = None) -> list[CandidatePlan]:
    """Different providers first (best quality weight first); if there are fewer providers than ``size``, further
    rounds sample the same providers again at other temperatures."""
    ranked = sorted(provider_ids, key=lambda p: -(weights or {}).get(p, 1.0))
    ordered: list[str | None] = list(ranked) or [None]
    plans = []
    for i in range(size):
        offset = TEMPERATURE_OFFSETS[(i // len(ordered)) % len(TEMPERATURE_OFFSETS)]
        plans.append(CandidatePlan(ordered[i % len(ordered)], round(min(2.0, max(0.0, base_temperature + offset)), 3)))
    return plans


class EnsembleGenerator:
    def __init__(self, source: Any, evaluator: ResponseEvaluator, config: EnsembleConfig | None = None, *,
                 tracker: ProviderQualityTracker | None = None):
        self.source = as_source(source)
        self.evaluator = evaluator
        self.config = config or EnsembleConfig()
        self.tracker = tracker

    async def generate(self, query: str, prompt: EngineeredPrompt, params: GenerationParams, *,
                       size: int | None = None, providers: Sequence[str] | None = None,
                       selection_method: str | None = None, consensus_threshold: float | None = None,
                       parallel: bool | None = None, metrics: Sequence[str] | None = None,
                       thresholds: QualityThresholds | None = None) -> EnsembleResult:
        method = selection_method or self.config.selection_method
        if method not in SELECTORS:
            raise InvalidInput(f"unknown selection method {method!r}", field="selection_method")
        start = time.perf_counter()
        plans = self._plans(size or self.config.size, providers, params.temperature)
        candidates = await self._generate_all(prompt, params, plans, start,
                                              self.config.parallel if parallel is None else parallel)
        generated = time.perf_counter()
        ok = [c for c in candidates if c.ok]
        if not ok:
            raise ProviderUnavailable(f"all {len(candidates)} ensemble candidates failed",
                                      details={"errors": [f"{c.provider}: {c.error}" for c in candidates]})
        await self._evaluate(query, prompt, ok, metrics, thresholds or self.evaluator.thresholds)
        eligible, warnings = self._eligible(ok)
        threshold = self.config.consensus_threshold if consensus_threshold is None else consensus_threshold
        consensus = await asyncio.to_thread(analyse, [c.text for c in eligible], self.evaluator.embedder,
                                            threshold=threshold)
        best = eligible[select(method, [c.overall for c in eligible], consensus)]
        end = time.perf_counter()
        timings = Timings((end - start) * 1000, (generated - start) * 1000, (end - generated) * 1000)
        return EnsembleResult(best, candidates, consensus, consensus.score, method,
                              list(dict.fromkeys(c.provider for c in ok)), timings, eligible, warnings)

    def _plans(self, size: int, providers: Sequence[str] | None, temperature: float) -> list[CandidatePlan]:
        if not 1 <= size <= 5:
            raise InvalidInput("ensemble_size must be between 1 and 5", field="ensemble_size")
        available = self.source.provider_ids()
        chosen = list(providers) if providers else available
        unknown = [p for p in chosen if available and p not in available]
        if unknown:
            raise InvalidInput(f"unknown provider(s) {unknown} (available: {available})", field="providers")
        weights = self.tracker.weights(chosen) if self.tracker else None
        return plan_candidates(chosen, size, temperature, weights)

    async def _generate_all(self, prompt: EngineeredPrompt, params: GenerationParams, plans: list[CandidatePlan],
                            start: float, parallel: bool) -> list[Candidate]:
        deadline = start + self.config.ensemble_timeout_s

        def run(plan: CandidatePlan) -> Any:
            return run_candidate(self.source, prompt.messages, replace(params, temperature=plan.temperature),
                                 provider=plan.provider, timeout_s=params.timeout_s or self.config.candidate_timeout_s,
                                 deadline=deadline)

        if parallel:
            return list(await asyncio.gather(*(run(p) for p in plans)))
        return [await run(p) for p in plans]

    async def _evaluate(self, query: str, prompt: EngineeredPrompt, ok: list[Candidate],
                        metrics: Sequence[str] | None, thresholds: QualityThresholds) -> None:
        evaluations = await self.evaluator.aevaluate_many(query, [c.text for c in ok], prompt.context.used,
                                                          metrics=metrics)
        for candidate, evaluation in zip(ok, evaluations, strict=True):
            candidate.evaluation = evaluation
            candidate.failed_thresholds = thresholds.failures(evaluation)
            if self.tracker is not None:
                self.tracker.record(candidate.tracking_id, evaluation.overall)

    @staticmethod
    def _eligible(ok: list[Candidate]) -> tuple[list[Candidate], list[str]]:
        passed = [c for c in ok if c.passed]
        if passed:
            return passed, []
        return ok, ["no candidate met the quality thresholds; selected among all successful candidates"]
