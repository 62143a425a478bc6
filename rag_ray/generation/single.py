"""Where candidate answers come from (``CandidateSource``), one candidate run, and fast single-provider mode.

``CandidateSource`` is the only thing the generators need: a list of provider ids and
``async generate(messages, params, *, provider=None)``. Adapters make one from a plain ``LLM``
(``LLMSource``), a dict of LLMs (``LLMPoolSource``) or the provider manager (``ManagerSource``);
``as_source`` picks the right one. The three adapters also say where a call would go and how big that model's
window is (``RoutedSource.targets``), so prompts are fitted to the model that serves them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from rag_ray.errors import InvalidInput, ProviderError, ProviderTimeout, RagError, RequestTimeout
from rag_ray.generation.evaluation import (
    Evaluation,
    EvaluationSession,
    ProviderQualityTracker,
    QualityThresholds,
    ResponseEvaluator,
)
from rag_ray.generation.fitting import Target
from rag_ray.generation.prompts import EngineeredPrompt
from rag_ray.llm.base import LLM, ChatMessage, Completion, GenerationParams, Usage
from rag_ray.llm.windows import resolve_window
from rag_ray.observability.deadline import check_deadline, remaining_budget
from rag_ray.providers.manager import LLMManager


@runtime_checkable
class CandidateSource(Protocol):
    def provider_ids(self) -> list[str]: ...

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams, *,
                       provider: str | None = None) -> Completion: ...


@runtime_checkable
class RoutedSource(Protocol):
    def targets(self, provider: str | None) -> list[Target]:
        """Where a call with ``provider`` (None: the source's choice) would go, in failover order, with each
        target's window. For the source's own routing the first target is the one it picks now."""
        ...


class LLMSource:
    """One LLM; ``provider`` is ignored (there is only one)."""

    def __init__(self, llm: LLM):
        self.llm = llm

    def provider_ids(self) -> list[str]:
        return [f"{self.llm.provider}:{self.llm.model}"]

    def targets(self, provider: str | None) -> list[Target]:
        only = self.provider_ids()[0]
        return [Target(only, resolve_window(only, self.llm))]

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams, *,
                       provider: str | None = None) -> Completion:
        return await self.llm.generate(messages, params)


class LLMPoolSource:
    """Named LLMs, e.g. ``{"openai:gpt-4o": ..., "anthropic:claude": ...}``; no provider → the first."""

    def __init__(self, llms: Mapping[str, LLM]):
        if not llms:
            raise InvalidInput("at least one LLM is needed", field="providers")
        self.llms = dict(llms)

    def provider_ids(self) -> list[str]:
        return list(self.llms)

    def targets(self, provider: str | None) -> list[Target]:
        key = provider or next(iter(self.llms))
        if key not in self.llms:
            raise InvalidInput(f"unknown provider {key!r} (available: {', '.join(self.llms)})", field="provider")
        return [Target(key, resolve_window(key, self.llms[key]))]

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams, *,
                       provider: str | None = None) -> Completion:
        key = provider or next(iter(self.llms))
        if key not in self.llms:
            raise InvalidInput(f"unknown provider {key!r} (available: {', '.join(self.llms)})", field="provider")
        return await self.llms[key].generate(messages, params)


class ManagerSource:
    """The provider manager (``LLMManager.generate(messages, params, *, strategy, provider, model)``).

    Ids are the manager's entry ids (``provider:model``); a requested id is passed as ``provider`` (the manager
    accepts a full id there), so that candidate goes to exactly that entry; no id lets the manager route and fail over.
    """

    def __init__(self, manager: LLMManager, provider_ids: Sequence[str] | None = None, *,
                 strategy: str | None = None):
        self.manager = manager
        self.strategy = strategy
        self._ids = list(provider_ids) if provider_ids is not None else [e.id for e in manager.entries]

    def provider_ids(self) -> list[str]:
        return list(self._ids)

    def targets(self, provider: str | None) -> list[Target]:
        """The manager's plan (``LLMManager.route``): its first entry is the one the strategy picks now."""
        return [Target(e.id, e.window()) for e in self.manager.route(strategy=self.strategy, provider=provider)]

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams, *,
                       provider: str | None = None) -> Completion:
        result: Completion = await self.manager.generate(messages, params, strategy=self.strategy,
                                                         provider=provider or None)
        return result


SourceLike = CandidateSource | LLMManager | LLM | Mapping[str, LLM]


def as_source(obj: SourceLike) -> CandidateSource:
    """A ``CandidateSource`` from a source, the provider manager, one LLM, or a mapping of LLMs by id."""
    if isinstance(obj, LLMManager):
        return ManagerSource(obj)
    if isinstance(obj, CandidateSource):
        return obj
    if isinstance(obj, Mapping):
        return LLMPoolSource(obj)
    if isinstance(obj, LLM):
        return LLMSource(obj)
    raise TypeError(f"cannot generate with {type(obj).__name__}")


# ---- one candidate ------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    provider: str
    model: str
    temperature: float
    text: str = ""
    latency_ms: float = 0.0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    error: str | None = None
    error_code: str | None = None
    exception: BaseException | None = field(default=None, repr=False)
    evaluation: Evaluation | None = None
    failed_thresholds: list[str] = field(default_factory=list)
    evaluation_ms: float = 0.0
    source_id: str | None = None  # the provider id the candidate was requested from (None: the source's default)

    @property
    def tracking_id(self) -> str:
        """The key for ``ProviderQualityTracker``: the requested id when there was one, else the provider."""
        return self.source_id or self.provider

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def overall(self) -> float:
        return self.evaluation.overall if self.evaluation else 0.0

    @property
    def passed(self) -> bool:
        return self.ok and not self.failed_thresholds


@dataclass
class Timings:
    """Wall times, except ``evaluation_ms``: the summed scoring time of all candidates, much of which overlaps
    generation in an ensemble (a candidate is scored while slower ones are still generating)."""

    total_ms: float = 0.0
    generation_ms: float = 0.0
    evaluation_ms: float = 0.0
    selection_ms: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in vars(self).items()}


def _as_error(exc: BaseException, provider: str) -> RagError:
    if isinstance(exc, RagError):
        return exc
    return ProviderError(f"{provider or 'provider'} failed: {type(exc).__name__}: {exc}", provider=provider)


async def run_candidate(source: CandidateSource, messages: Sequence[ChatMessage], params: GenerationParams, *,
                        provider: str | None, timeout_s: float | None, deadline: float | None = None) -> Candidate:
    """One generation with a timeout; failures are captured on the candidate, never raised.

    The provider gets ``timeout_s`` (→ ``ProviderTimeout``) unless the generator's ``deadline`` (a ``perf_counter``
    instant) or the request's own deadline comes first (→ ``RequestTimeout``); that budget goes to the provider as
    ``params.timeout_s``, and the call is cancelled when it runs out. A candidate whose budget is already spent is not
    started.
    """
    start = time.perf_counter()
    cap = _earliest(timeout_s, None if deadline is None else deadline - start)
    budget = remaining_budget(cap)
    label = provider or ""
    try:
        if budget is not None and budget <= 0:
            raise RequestTimeout("the request deadline passed before this candidate started")
        call = source.generate(messages, _with_budget(params, budget), provider=provider)
        completion = await asyncio.wait_for(call, budget)
    except TimeoutError:
        err: RagError = (ProviderTimeout(f"{label or 'provider'} did not answer within {timeout_s:g}s",
                                         provider=label) if timeout_s is not None and budget == timeout_s else
                         RequestTimeout("the request deadline passed before this candidate finished"))
        return _failed(label, params, err, start)
    except Exception as exc:  # one candidate's failure is data for the caller, not a crash
        return _failed(label, params, _as_error(exc, label), start)
    return Candidate(provider=completion.provider, model=completion.model, temperature=params.temperature,
                     text=completion.text, latency_ms=(time.perf_counter() - start) * 1000, usage=completion.usage,
                     cost_usd=completion.cost_usd, source_id=provider)


def _earliest(*budgets: float | None) -> float | None:
    given = [b for b in budgets if b is not None]
    return min(given) if given else None


def _with_budget(params: GenerationParams, budget: float | None) -> GenerationParams:
    if budget is None:
        return params
    return replace(params, timeout_s=min(params.timeout_s or budget, budget))


def _failed(provider: str, params: GenerationParams, err: RagError, start: float) -> Candidate:
    name, _, model = provider.partition(":")
    return Candidate(provider=name, model=model, temperature=params.temperature, error=err.message,
                     error_code=err.code, exception=err, latency_ms=(time.perf_counter() - start) * 1000,
                     source_id=provider or None)


# ---- fast mode ----------------------------------------------------------------------------------------------
@dataclass
class SingleResult:
    candidate: Candidate
    timings: Timings


class SingleGenerator:
    """Fast mode: one provider, one answer, scored. Provider failures are raised (there is nothing to fall back to
    here — retries and failover belong to the provider manager)."""

    def __init__(self, source: SourceLike, evaluator: ResponseEvaluator, *, timeout_s: float | None = None,
                 request_timeout_s: float | None = None, tracker: ProviderQualityTracker | None = None):
        self.source = as_source(source)
        self.evaluator = evaluator
        self.timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s
        self.tracker = tracker

    async def generate(self, query: str, prompt: EngineeredPrompt, params: GenerationParams, *,
                       provider: str | None = None, metrics: Sequence[str] | None = None,
                       thresholds: QualityThresholds | None = None) -> SingleResult:
        start = time.perf_counter()
        budget = remaining_budget(self.request_timeout_s)
        deadline = None if budget is None else start + budget
        session = self.evaluator.session(query, prompt.context.used, metrics=metrics)
        prepared = asyncio.create_task(asyncio.to_thread(session.prepare))  # embed the context while generating
        try:
            candidate = await run_candidate(self.source, prompt.messages, params, provider=provider,
                                            timeout_s=params.timeout_s or self.timeout_s, deadline=deadline)
        finally:
            await prepared
        if candidate.exception is not None:
            if isinstance(candidate.exception, RequestTimeout):
                check_deadline(f"waiting for {provider or 'the provider'}")  # the request's own 504, saying why
            raise candidate.exception
        generated = time.perf_counter()
        evaluation = await self._evaluate(session, candidate.text, deadline)
        candidate.evaluation = evaluation
        candidate.failed_thresholds = (thresholds or self.evaluator.thresholds).failures(evaluation)
        if self.tracker is not None:
            self.tracker.record(candidate.tracking_id, evaluation.overall)
        end = time.perf_counter()
        candidate.evaluation_ms = (end - generated) * 1000
        return SingleResult(candidate, Timings((end - start) * 1000, (generated - start) * 1000,
                                               candidate.evaluation_ms))

    @staticmethod
    async def _evaluate(session: EvaluationSession, text: str, deadline: float | None) -> Evaluation:
        work = session.aevaluate_many([text])
        if deadline is None:
            return (await work)[0]
        try:
            return (await asyncio.wait_for(work, max(0.0, deadline - time.perf_counter())))[0]
        except TimeoutError:
            check_deadline("scoring the answer")
            raise RequestTimeout("the request deadline passed while scoring the answer") from None
