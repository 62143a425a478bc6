"""High-quality mode: N candidates (different providers, or temperature-varied samples of one), scored, filtered,
compared for consensus, and one selected.

Failures are per candidate: a provider that errors or times out is reported on its ``Candidate`` and the ensemble
goes on with what finished (``EnsembleResult.partial`` when some did not, each with its reason). When none finished,
the request's deadline having passed is a ``RequestTimeout`` (504) and other failures ``ProviderUnavailable``. The
exception is a candidate that refused the prompt as too long: all candidates share one prompt, so ``ContextTooLong`` is
raised for the caller to refit it (``generation.fitting``) and run the ensemble again.

Every candidate is budgeted to the request's deadline, less a reserve for scoring and selection, and cancelled when
that runs out: candidates sampled from one model (which it may serve one after another) never queue past the deadline,
and a candidate whose turn comes after it is not started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from rag_ray.errors import ContextTooLong, InvalidInput, ProviderUnavailable, RequestTimeout
from rag_ray.generation.consensus import SELECTORS, ConsensusResult, analyse, select
from rag_ray.generation.evaluation import (
    EvaluationSession,
    ProviderQualityTracker,
    QualityThresholds,
    ResponseEvaluator,
)
from rag_ray.generation.prompts import EngineeredPrompt
from rag_ray.generation.single import Candidate, SourceLike, Timings, as_source, run_candidate
from rag_ray.llm.base import GenerationParams
from rag_ray.observability.deadline import current_deadline, remaining_budget

# Repeated samples of one provider use these temperature offsets in turn (clipped to [0, 2]).
TEMPERATURE_OFFSETS = (0.0, 0.3, -0.3, 0.6, -0.6)


SCORING_RESERVE_S = 2.0  # of the request's budget, kept for scoring and selecting what finished
SCORING_RESERVE_SHARE = 0.25  # … but never more than this share of it
TIMEOUT_CODES = frozenset({"timeout", "provider_timeout"})


@dataclass
class EnsembleConfig:
    size: int = 3
    candidate_timeout_s: float | None = None  # None: the request's deadline is the only bound
    ensemble_timeout_s: float | None = None
    parallel: bool = True
    consensus_threshold: float = 0.7
    selection_method: str = "consensus_weighted"


@dataclass(frozen=True)
class CandidatePlan:
    provider: str | None
    temperature: float


@dataclass
class _Run:
    """Per-request state shared by the candidate tasks."""

    prompt: EngineeredPrompt
    params: GenerationParams
    session: EvaluationSession
    thresholds: QualityThresholds
    deadline: float | None  # perf_counter instant: the candidates' deadline (scoring may use the reserve after it)
    scoring_deadline: float | None = None
    generated_at: list[float] = field(default_factory=list)


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
    def partial(self) -> bool:
        """Some candidates did not finish (each says why: ``error``/``error_code``)."""
        return any(not c.ok for c in self.candidates)

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
    def __init__(self, source: SourceLike, evaluator: ResponseEvaluator, config: EnsembleConfig | None = None, *,
                 tracker: ProviderQualityTracker | None = None):
        self.source = as_source(source)
        self.evaluator = evaluator
        self.config = config or EnsembleConfig()
        self.tracker = tracker

    async def generate(self, query: str, prompt: EngineeredPrompt, params: GenerationParams, *,
                       size: int | None = None, providers: Sequence[str] | None = None,
                       selection_method: str | None = None, consensus_threshold: float | None = None,
                       parallel: bool | None = None, metrics: Sequence[str] | None = None,
                       thresholds: QualityThresholds | None = None,
                       plans: Sequence[CandidatePlan] | None = None) -> EnsembleResult:
        """``plans``: the candidates from ``plan`` (the caller fitted the prompt to their windows); else planned
        here from ``size`` and ``providers``."""
        method = selection_method or self.config.selection_method
        if method not in SELECTORS:
            raise InvalidInput(f"unknown selection method {method!r}", field="selection_method")
        start = time.perf_counter()
        plans = list(plans) if plans else self.plan(size or self.config.size, providers, params.temperature)
        budget = remaining_budget(self.config.ensemble_timeout_s)
        reserve = 0.0 if budget is None else min(SCORING_RESERVE_S, budget * SCORING_RESERVE_SHARE)
        run = _Run(prompt, params, self.evaluator.session(query, prompt.context.used, metrics=metrics),
                   thresholds or self.evaluator.thresholds, None if budget is None else start + budget - reserve,
                   None if budget is None else start + budget)
        prepared = asyncio.create_task(asyncio.to_thread(run.session.prepare))  # embed the context meanwhile
        try:
            candidates = await self._generate_and_score(run, plans, self.config.parallel if parallel is None
                                                        else parallel)
        finally:
            await prepared
        ok = [c for c in candidates if c.ok]
        too_long = [c.exception for c in candidates if isinstance(c.exception, ContextTooLong)]
        if too_long:
            raise too_long[0]
        if not ok:
            raise self._none_finished(candidates)
        result = await self._select(run, candidates, ok, method, consensus_threshold, start)
        if result.partial:
            result.warnings.append(f"partial: {len(ok)} of {len(candidates)} candidates finished; the others say why")
        return result

    @staticmethod
    def _none_finished(candidates: list[Candidate]) -> Exception:
        errors = [f"{c.provider or c.source_id or 'provider'}: {c.error}" for c in candidates]
        if all(c.error_code in TIMEOUT_CODES for c in candidates):
            deadline = current_deadline()
            by_request = all(c.error_code == "timeout" for c in candidates)  # not a provider's own time limit
            if deadline is not None and by_request:  # it was cut a scoring reserve before the request's deadline
                err = deadline.exceeded(f"none of the {len(candidates)} ensemble candidates had finished")
            else:
                err = RequestTimeout(f"none of the {len(candidates)} ensemble candidates finished in time")
            err.details = {**err.details, "errors": errors}
            return err
        return ProviderUnavailable(f"all {len(candidates)} ensemble candidates failed", details={"errors": errors})

    async def _select(self, run: _Run, candidates: list[Candidate], ok: list[Candidate], method: str,
                      consensus_threshold: float | None, start: float) -> EnsembleResult:
        selecting = time.perf_counter()
        eligible, warnings = self._eligible(ok)
        threshold = self.config.consensus_threshold if consensus_threshold is None else consensus_threshold
        vectors = [c.evaluation.answer_vector for c in eligible
                   if c.evaluation is not None and c.evaluation.answer_vector is not None]
        consensus = analyse([c.text for c in eligible], self.evaluator.embedder, threshold=threshold,
                            vectors=np.stack(vectors) if len(vectors) == len(eligible) else None)
        best = eligible[select(method, [c.overall for c in eligible], consensus)]
        end = time.perf_counter()
        timings = Timings((end - start) * 1000, (max(run.generated_at, default=start) - start) * 1000,
                          sum(c.evaluation_ms for c in ok), (end - selecting) * 1000)
        return EnsembleResult(best, candidates, consensus, consensus.score, method,
                              list(dict.fromkeys(c.provider for c in ok)), timings, eligible, warnings)

    def plan(self, size: int, providers: Sequence[str] | None, temperature: float) -> list[CandidatePlan]:
        """The candidates an ensemble of ``size`` over ``providers`` (None: all of the source's) would run."""
        if not 1 <= size <= 5:
            raise InvalidInput("ensemble_size must be between 1 and 5", field="ensemble_size")
        available = self.source.provider_ids()
        chosen = list(providers) if providers else available
        unknown = [p for p in chosen if available and p not in available]
        if unknown:
            raise InvalidInput(f"unknown provider(s) {unknown} (available: {available})", field="providers")
        weights = self.tracker.weights(chosen) if self.tracker else None
        return plan_candidates(chosen, size, temperature, weights)

    async def _generate_and_score(self, run: _Run, plans: list[CandidatePlan], parallel: bool) -> list[Candidate]:
        """Each candidate is scored as soon as it is generated, overlapping the wait for slower providers.
        Sequential mode generates one after another but still scores in the background."""
        if parallel:
            return list(await asyncio.gather(*(self._one(run, p, score=True) for p in plans)))
        candidates, scoring = [], []
        for plan in plans:
            candidate = await self._one(run, plan, score=False)
            candidates.append(candidate)
            if candidate.ok:
                scoring.append(asyncio.create_task(self._score(run, candidate)))
        await asyncio.gather(*scoring)
        return candidates

    async def _one(self, run: _Run, plan: CandidatePlan, *, score: bool) -> Candidate:
        params = replace(run.params, temperature=plan.temperature)
        candidate = await run_candidate(self.source, run.prompt.messages, params, provider=plan.provider,
                                        timeout_s=run.params.timeout_s or self.config.candidate_timeout_s,
                                        deadline=run.deadline)
        run.generated_at.append(time.perf_counter())
        if score and candidate.ok:
            await self._score(run, candidate)
        return candidate

    async def _score(self, run: _Run, candidate: Candidate) -> None:
        """Score one answer, within the request's deadline: one still unscored then is dropped, saying so."""
        start = time.perf_counter()
        left = None if run.scoring_deadline is None else max(0.0, run.scoring_deadline - start)
        try:
            [evaluation] = await asyncio.wait_for(run.session.aevaluate_many([candidate.text]), left)
        except TimeoutError:
            candidate.error = "the request deadline passed while scoring this candidate"
            candidate.error_code = "timeout"
            return
        candidate.evaluation = evaluation
        candidate.evaluation_ms = (time.perf_counter() - start) * 1000
        candidate.failed_thresholds = run.thresholds.failures(evaluation)
        if self.tracker is not None:
            self.tracker.record(candidate.tracking_id, evaluation.overall)

    @staticmethod
    def _eligible(ok: list[Candidate]) -> tuple[list[Candidate], list[str]]:
        passed = [c for c in ok if c.passed]
        if passed:
            return passed, []
        return ok, ["no candidate met the quality thresholds; selected among all successful candidates"]
