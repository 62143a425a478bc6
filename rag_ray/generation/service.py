"""``GenerationService``: the library behind ``/generate/single``, ``/generate/ensemble`` and ``/generate/rag``.

Request models mirror the seed's JSON bodies (plus a few optional extras), forbid unknown fields and cap sizes:

============================  ==========================================
query                         1 … 4 000 characters
context (free text)           ≤ 20 000 characters
system_prompt                 ≤ 4 000 characters
custom_instructions           ≤ 2 000 characters
max_tokens                    1 … 4 096
temperature                   0 … 2
ensemble_size                 1 … 5
providers (ensemble)          ≤ 5 ids
retrieval_config.k            1 … 100
thresholds / consensus        0 … 1
============================  ==========================================

``parse_request`` turns a pydantic ``ValidationError`` into ``InvalidInput`` naming the field (``a.b.c``).
Retrieval is not done here: ``generate_rag`` takes the hits the caller already retrieved (and access-filtered);
``rag_ray.generation.rag.RagPipeline`` is that caller.

Every prompt is fitted to the window of the model that serves it (``generation.fitting``): the source says where a
call goes (``RoutedSource.targets``: for the provider manager, the entry its strategy picks, then its failover
order) and that entry's window; an ensemble shares one prompt fitted to the smallest window among its candidates.
``context`` in the response says which passages were used and dropped, and how (``window``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from rag_ray.errors import InvalidInput
from rag_ray.generation.consensus import SELECTORS
from rag_ray.generation.context import INJECTION_MODES, ContextChunk
from rag_ray.generation.ensemble import EnsembleConfig, EnsembleGenerator, EnsembleResult
from rag_ray.generation.evaluation import (
    Evaluation,
    ProviderQualityTracker,
    QualityThresholds,
    ResponseEvaluator,
)
from rag_ray.generation.fitting import FittedPrompt, PromptFitter, Target, WindowFit, fitted_call, smallest
from rag_ray.generation.formats import (
    FilterOutcome,
    QualityFilters,
    ResponseDocument,
    apply_quality_filters,
    build_citations,
    remove_invalid_citations,
    render,
    tidy,
)
from rag_ray.generation.prompts import STRATEGIES, PromptEngineer, PromptRequest
from rag_ray.generation.single import (
    Candidate,
    RoutedSource,
    SingleGenerator,
    SingleResult,
    SourceLike,
    Timings,
    as_source,
)
from rag_ray.llm.base import Usage
from rag_ray.llm.windows import DEFAULT_WINDOW, WindowSpec
from rag_ray.types import SearchHit

MAX_QUERY_CHARS = 4000
MAX_CONTEXT_CHARS = 20_000
MAX_SYSTEM_PROMPT_CHARS = 4000
MAX_INSTRUCTIONS_CHARS = 2000
MAX_TOKENS_CAP = 4096
MAX_ENSEMBLE_SIZE = 5
MAX_TIMEOUT_S = 3600.0  # a body's timeout_s; the server's own cap (RAG_MAX_REQUEST_TIMEOUT_S) is checked at the edge


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("query must not be blank")
    return text.strip()


QueryText = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS), AfterValidator(_not_blank)]

ResponseFormat = Literal["plain_text", "markdown", "html", "json", "structured"]
MetricName = Literal["relevance", "accuracy", "completeness", "clarity", "coherence", "llm_judge"]
DEFAULT_METRICS: tuple[MetricName, ...] = ("relevance", "accuracy", "completeness", "clarity", "coherence")
MODE_SELECTION = {"high_quality": "consensus_weighted", "balanced": "best_weighted_score"}


# ---- requests -----------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _known(value: str | None, registry: Mapping[str, object], what: str) -> str | None:
    if value is not None and value not in registry:
        raise ValueError(f"unknown {what} {value!r} (known: {', '.join(sorted(registry))})")
    return value


class _PromptOptions(_Strict):
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1000, ge=1, le=MAX_TOKENS_CAP)
    model: str | None = Field(default=None, max_length=200, description="'model' or 'provider:model'")
    system_prompt: str | None = Field(default=None, max_length=MAX_SYSTEM_PROMPT_CHARS)
    custom_instructions: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS_CHARS)
    prompt_strategy: str = "structured"
    context_injection: str | None = None

    @field_validator("prompt_strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        return _known(v, STRATEGIES, "prompt strategy") or v

    @field_validator("context_injection")
    @classmethod
    def _injection(cls, v: str | None) -> str | None:
        return _known(v, INJECTION_MODES, "context injection mode")


TIMEOUT_DESCRIPTION = ("this request's deadline in seconds (default RAG_GENERATE_TIMEOUT_S; at most "
                       "RAG_MAX_REQUEST_TIMEOUT_S)")


def timeout_field() -> Any:
    return Field(default=None, gt=0, le=MAX_TIMEOUT_S, description=TIMEOUT_DESCRIPTION)


class _QueryRequest(_PromptOptions):
    query: QueryText
    context: str | None = Field(default=None, max_length=MAX_CONTEXT_CHARS, description="free-text context")
    timeout_s: float | None = timeout_field()


class SingleRequest(_QueryRequest):
    """Body of ``POST /generate/single`` (fast mode)."""

    mode: Literal["fast"] = "fast"
    response_format: ResponseFormat = "markdown"
    provider: str | None = Field(default=None, max_length=200)


class EnsembleRequest(_QueryRequest):
    """Body of ``POST /generate/ensemble``. ``mode`` picks the default selection: high_quality → consensus_weighted,
    balanced → best_weighted_score."""

    mode: Literal["high_quality", "balanced"] = "high_quality"
    ensemble_size: int = Field(default=3, ge=1, le=MAX_ENSEMBLE_SIZE)
    consensus_threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    enable_parallel_generation: bool = True
    evaluation_metrics: list[MetricName] = Field(default_factory=lambda: list(DEFAULT_METRICS), min_length=1,
                                                 max_length=6)
    output_format: ResponseFormat = "markdown"
    selection_method: str | None = None
    providers: list[str] | None = Field(default=None, max_length=MAX_ENSEMBLE_SIZE)

    @field_validator("selection_method")
    @classmethod
    def _selection(cls, v: str | None) -> str | None:
        return _known(v, SELECTORS, "selection method")


class RetrievalConfig(_Strict):
    k: int | None = Field(default=None, ge=1, le=100, description="None: the server's default (as on /query)")
    search_strategy: Literal["dense", "sparse", "hybrid"] | None = None  # None: hybrid where BM25 exists
    include_metadata: bool = True
    enable_reranking: bool | None = Field(default=None, description="None: rerank when a reranker is configured")
    filters: dict[str, Any] | None = None


class RagGenerationConfig(_PromptOptions):
    mode: Literal["single", "ensemble"] = "single"
    ensemble_size: int = Field(default=3, ge=1, le=MAX_ENSEMBLE_SIZE)
    prompt_strategy: str = "contextual"
    enable_post_processing: bool = True
    response_format: ResponseFormat = "markdown"
    consensus_threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    enable_parallel_generation: bool = True
    selection_method: str | None = None

    @field_validator("selection_method")
    @classmethod
    def _selection(cls, v: str | None) -> str | None:
        return _known(v, SELECTORS, "selection method")


class QualityFiltersConfig(_Strict):
    min_relevance: float = Field(default=0.0, ge=0.0, le=1.0)
    min_completeness: float = Field(default=0.0, ge=0.0, le=1.0)
    min_accuracy: float = Field(default=0.0, ge=0.0, le=1.0)
    enable_fact_checking: bool = False
    fact_check_action: Literal["drop", "flag"] = "drop"


class RagGenerateRequest(_Strict):
    """Body of ``POST /generate/rag``."""

    query: QueryText
    retrieval_config: RetrievalConfig = Field(default_factory=lambda: RetrievalConfig())
    generation_config: RagGenerationConfig = Field(default_factory=lambda: RagGenerationConfig())
    quality_filters: QualityFiltersConfig = Field(default_factory=lambda: QualityFiltersConfig())
    timeout_s: float | None = timeout_field()


M = TypeVar("M", bound=BaseModel)


def parse_request(model: type[M], data: Any) -> M:
    """Validate a body; the first problem becomes ``InvalidInput`` with ``field`` = its dotted location."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{location}: {first['msg']}", field=location,
                           details={"errors": [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                                               for e in exc.errors()]}) from None


# ---- responses ----------------------------------------------------------------------------------------------
class MetricOut(BaseModel):
    score: float
    confidence: float
    explanation: str


class QualityReport(BaseModel):
    overall: float
    scores: dict[str, MetricOut]
    passed: bool
    unsupported_sentences: list[str] = []
    removed_sentences: list[str] = []
    flagged_sentences: list[str] = []
    invalid_citations: list[int] = []
    warnings: list[str] = []


class CitationOut(BaseModel):
    number: int
    chunk_id: str
    source: str
    snippet: str


class SourceOut(BaseModel):
    number: int
    chunk_id: str
    source: str
    score: float
    truncated: bool
    metadata: dict[str, Any] | None = None


class WindowOut(BaseModel):
    """How the prompt was fitted: the window of ``provider`` (from its spec, the adapter, the known-models table or
    the default), counted with its tokenizer or estimated, and ``max_tokens`` (below ``max_tokens_requested`` when
    the answer had to shrink to fit)."""

    provider: str
    context_window: int
    window_source: str
    counted_with: str
    prompt_tokens: int
    max_tokens: int
    max_tokens_requested: int
    refits: int
    calibrations: int

    @classmethod
    def of(cls, fit: WindowFit) -> WindowOut:
        return cls(**dataclasses.asdict(fit))


class PassagesOut(BaseModel):
    """Which retrieved passages reached the prompt (``used``, in citation order: [1] first), which were trimmed to fit
    and which were left out (``dropped``: duplicates and what did not fit the window)."""

    used: list[str]
    dropped: list[str]
    truncated: list[str]
    window: WindowOut

    @classmethod
    def of(cls, fitted: FittedPrompt) -> PassagesOut:
        return cls(used=fitted.used_ids, dropped=fitted.dropped_ids, truncated=fitted.truncated_ids,
                   window=WindowOut.of(fitted.fit))


class ContextInfo(BaseModel):
    template_used: str
    strategy: str
    injection_mode: str
    contexts_used: int
    contexts_dropped: int
    original_tokens: int
    final_tokens: int
    budget_tokens: int
    compression_applied: bool
    sources: list[SourceOut] = []
    used: list[str] = []  # chunk ids in the prompt, [1] first
    dropped: list[str] = []  # chunk ids left out (duplicates, or no room in the window)
    truncated: list[str] = []
    window: WindowOut | None = None


class CandidateOut(BaseModel):
    provider: str
    model: str
    temperature: float
    text: str
    scores: dict[str, float]
    overall: float
    latency_ms: float
    usage: dict[str, int]
    cost_usd: float
    passed_thresholds: bool
    selected: bool
    error: str | None = None
    error_code: str | None = None


class EnsembleInfo(BaseModel):
    partial: bool = False  # some candidates did not finish (their ``error``/``error_code`` say why)
    consensus_score: float
    consensus_reached: bool
    consensus_threshold: float
    selection_method: str
    providers_used: list[str]
    clusters: list[list[int]]  # indices into ``candidates``; only successful answers that passed the filters
    candidates: list[CandidateOut]


class GenerationResponse(BaseModel):
    response: str
    response_format: str
    structured: dict[str, Any] | None = None
    mode: Literal["single", "ensemble"]
    provider: str
    model: str
    quality: QualityReport
    citations: list[CitationOut]
    context: ContextInfo
    usage: dict[str, int]
    cost_usd: float
    timings: dict[str, float]
    ensemble: EnsembleInfo | None = None
    partial: bool = False  # an ensemble answered from fewer candidates than asked (``ensemble.candidates`` say why)


# ---- the service --------------------------------------------------------------------------------------------
@dataclass
class GenerationSettings:
    """Caps in seconds (None: none); over HTTP the request's deadline (``RAG_GENERATE_TIMEOUT_S``, ``timeout_s``)
    bounds every step whatever these say, and a call through the provider manager is bounded by its default."""

    context_window: int = DEFAULT_WINDOW  # only for sources that cannot say where a call goes (not RoutedSource)
    single_timeout_s: float | None = None
    request_timeout_s: float | None = None
    candidate_timeout_s: float | None = None
    ensemble_timeout_s: float | None = None


@dataclass
class _Job:
    """Everything one request needs, whichever endpoint it came from."""

    query: str
    contexts: list[ContextChunk]
    options: _PromptOptions
    response_format: str
    mode: Literal["single", "ensemble"]
    provider: str | None = None
    ensemble_size: int = 3
    consensus_threshold: float = 0.7
    parallel: bool = True
    selection_method: str = "consensus_weighted"
    metrics: Sequence[str] | None = None
    providers: Sequence[str] | None = None
    filters: QualityFilters = field(default_factory=QualityFilters)
    post_process: bool = True
    include_metadata: bool = True
    field: str = "query"  # the request field holding the user's text (named by a 422 when it alone is too long)
    mask: Callable[[str], str] | None = None  # applied to generated text before the caller sees it


class GenerationService:
    def __init__(self, source: SourceLike, evaluator: ResponseEvaluator, *, settings: GenerationSettings | None = None,
                 prompt_engineer: PromptEngineer | None = None, tracker: ProviderQualityTracker | None = None):
        self.source = as_source(source)
        self.evaluator = evaluator
        self.settings = settings or GenerationSettings()
        self.prompts = prompt_engineer or PromptEngineer(context_window=self.settings.context_window)
        self.tracker = tracker
        self.single = SingleGenerator(self.source, evaluator, timeout_s=self.settings.single_timeout_s,
                                      request_timeout_s=self.settings.request_timeout_s, tracker=tracker)
        self.ensemble = EnsembleGenerator(self.source, evaluator, EnsembleConfig(
            candidate_timeout_s=self.settings.candidate_timeout_s,
            ensemble_timeout_s=self.settings.ensemble_timeout_s), tracker=tracker)

    async def generate_single(self, request: SingleRequest) -> GenerationResponse:
        return await self._run(_Job(request.query, _free_text_context(request.context), request,
                                    request.response_format, "single", provider=request.provider))

    async def generate_ensemble(self, request: EnsembleRequest) -> GenerationResponse:
        return await self._run(_Job(
            request.query, _free_text_context(request.context), request, request.output_format, "ensemble",
            ensemble_size=request.ensemble_size, consensus_threshold=request.consensus_threshold,
            parallel=request.enable_parallel_generation, metrics=list(request.evaluation_metrics),
            selection_method=request.selection_method or MODE_SELECTION[request.mode], providers=request.providers))

    async def generate_rag(self, request: RagGenerateRequest, hits: Sequence[SearchHit], *,
                           mask: Callable[[str], str] | None = None) -> GenerationResponse:
        """``hits``: retrieved for the caller, best first; ``mask``: what the caller may see of generated text."""
        gen, qf, k = request.generation_config, request.quality_filters, request.retrieval_config.k
        contexts = [ContextChunk.from_hit(h) for h in (hits[:k] if k else hits)]
        return await self._run(_Job(
            request.query, contexts, gen, gen.response_format, gen.mode, ensemble_size=gen.ensemble_size,
            consensus_threshold=gen.consensus_threshold, parallel=gen.enable_parallel_generation,
            selection_method=gen.selection_method or "consensus_weighted", post_process=gen.enable_post_processing,
            filters=QualityFilters(qf.min_relevance, qf.min_completeness, qf.min_accuracy, qf.enable_fact_checking,
                                   qf.fact_check_action),
            include_metadata=request.retrieval_config.include_metadata, mask=mask))

    # ---- shared path ----
    async def _run(self, job: _Job) -> GenerationResponse:
        opts = job.options
        fitter = PromptFitter(self.prompts, PromptRequest(job.query, job.contexts, opts.system_prompt,
                                                          opts.custom_instructions, job.response_format),
                              opts.prompt_strategy, opts.context_injection, opts.max_tokens, field=job.field)
        thresholds = QualityThresholds(min_relevance=job.filters.min_relevance,
                                       min_completeness=job.filters.min_completeness,
                                       min_accuracy=job.filters.min_accuracy)
        if job.mode == "single":
            return await self._single(job, fitter, thresholds)
        return await self._ensemble(job, fitter, thresholds)

    async def _single(self, job: _Job, fitter: PromptFitter, thresholds: QualityThresholds) -> GenerationResponse:
        async def call(fitted: FittedPrompt, target: Target) -> SingleResult:
            return await self.single.generate(job.query, fitted.prompt, fitted.params(job.options.temperature),
                                              metrics=job.metrics, thresholds=thresholds, provider=target.provider)

        targets = self.targets(self._resolve_provider(job.provider, job.options.model))
        fitted, single = await fitted_call(fitter, targets, call)
        return self._respond(job, fitted, single.candidate, [single.candidate], single.timings, None)

    async def _ensemble(self, job: _Job, fitter: PromptFitter, thresholds: QualityThresholds) -> GenerationResponse:
        plans = self.ensemble.plan(job.ensemble_size, self._ensemble_providers(job), job.options.temperature)
        window = smallest([self.targets(p)[0].window for p in dict.fromkeys(plan.provider for plan in plans)])

        async def call(fitted: FittedPrompt, _: Target) -> EnsembleResult:
            return await self.ensemble.generate(
                job.query, fitted.prompt, fitted.params(job.options.temperature), plans=plans,
                selection_method=job.selection_method, consensus_threshold=job.consensus_threshold,
                parallel=job.parallel, metrics=job.metrics, thresholds=thresholds)

        fitted, result = await fitted_call(fitter, [Target(None, window)], call)
        return self._respond(job, fitted, result.best, result.candidates, result.timings, result)

    def targets(self, provider: str | None) -> list[Target]:
        """Where a call for ``provider`` (None: the source's choice) goes, in failover order, with each window."""
        if isinstance(self.source, RoutedSource):
            return self.source.targets(provider)
        return [Target(provider, WindowSpec(provider or "default", self.settings.context_window, "default"))]

    def _resolve_provider(self, provider: str | None, model: str | None) -> str | None:
        """``provider`` and/or ``model`` → a source provider id (``provider`` or ``provider:model``)."""
        if provider:
            return f"{provider}:{model}" if model and ":" not in provider else provider
        if not model or ":" in model:
            return model or None
        ids = self.source.provider_ids()
        matches = [i for i in ids if i == model or i.partition(":")[2] == model]
        if not matches:
            raise InvalidInput(f"no configured provider serves model {model!r} (available: {', '.join(ids)})",
                               field="model")
        return matches[0]

    def _ensemble_providers(self, job: _Job) -> Sequence[str] | None:
        if job.providers:
            return job.providers
        chosen = self._resolve_provider(None, job.options.model) if job.options.model else None
        return [chosen] if chosen else None

    def _respond(self, job: _Job, fitted: FittedPrompt, best: Candidate, candidates: list[Candidate],
                 timings: Timings, ensemble: EnsembleResult | None) -> GenerationResponse:
        start = time.perf_counter()
        assert best.evaluation is not None
        mask = job.mask or _unmasked
        used = fitted.prompt.context.used
        outcome = self._post_process(job, fitted, best.text, best.evaluation)
        outcome.text = mask(outcome.text)
        citations = build_citations(outcome.text, used)
        doc = ResponseDocument(outcome.text, citations, [mask(x) for x in best.evaluation.unsupported_sentences])
        formatted = render(doc, job.response_format)
        usage = Usage(sum(c.usage.prompt_tokens for c in candidates),
                      sum(c.usage.completion_tokens for c in candidates))
        return GenerationResponse(
            response=formatted.content, response_format=formatted.format, structured=formatted.data, mode=job.mode,
            provider=best.provider, model=best.model, quality=_quality(best.evaluation, outcome, ensemble, mask),
            citations=[CitationOut(**vars(c)) for c in citations], context=_context_info(fitted, job.include_metadata),
            usage=usage.to_dict(), cost_usd=round(sum(c.cost_usd for c in candidates), 6),
            timings={**timings.to_dict(), "postprocess_ms": round((time.perf_counter() - start) * 1000, 2)},
            ensemble=_ensemble_info(ensemble, mask) if ensemble else None, partial=bool(ensemble and ensemble.partial))

    @staticmethod
    def _post_process(job: _Job, fitted: FittedPrompt, text: str, evaluation: Evaluation) -> FilterOutcome:
        if not job.post_process:
            return FilterOutcome(text, passed=True)
        valid = {u.number for u in fitted.prompt.context.used}
        return apply_quality_filters(tidy(remove_invalid_citations(text, valid)), evaluation, job.filters)


def _unmasked(text: str) -> str:
    return text


def _free_text_context(context: str | None) -> list[ContextChunk]:
    return [ContextChunk(id="request-context", text=context, score=1.0, source="request")] if context else []


def _quality(evaluation: Evaluation, outcome: FilterOutcome, ensemble: EnsembleResult | None,
             mask: Callable[[str], str]) -> QualityReport:
    warnings = list(outcome.warnings) + (ensemble.warnings if ensemble else [])
    return QualityReport(
        overall=round(evaluation.overall, 4), passed=outcome.passed,
        scores={m: MetricOut(score=round(s.score, 4), confidence=round(s.confidence, 4), explanation=s.explanation)
                for m, s in evaluation.scores.items()},
        unsupported_sentences=[mask(x) for x in evaluation.unsupported_sentences],
        removed_sentences=[mask(x) for x in outcome.removed_sentences],
        flagged_sentences=[mask(x) for x in outcome.flagged_sentences], invalid_citations=evaluation.invalid_citations,
        warnings=warnings)


def _context_info(fitted: FittedPrompt, include_metadata: bool) -> ContextInfo:
    meta, used = fitted.prompt.metadata, fitted.prompt.context.used
    sources = [SourceOut(number=u.number, chunk_id=u.chunk.id, source=u.chunk.source, score=u.chunk.score,
                         truncated=u.truncated, metadata=u.chunk.metadata if include_metadata else None)
               for u in used]
    return ContextInfo(template_used=meta["template_used"], strategy=meta["strategy"],
                       injection_mode=meta["injection_mode"], contexts_used=meta["contexts_used"],
                       contexts_dropped=meta["contexts_dropped"], original_tokens=meta["original_tokens"],
                       final_tokens=meta["final_tokens"], budget_tokens=meta["budget_tokens"],
                       compression_applied=meta["compression_applied"], sources=sources, used=fitted.used_ids,
                       dropped=fitted.dropped_ids, truncated=fitted.truncated_ids, window=WindowOut.of(fitted.fit))


def _candidate_out(c: Candidate, best: Candidate, mask: Callable[[str], str]) -> CandidateOut:
    return CandidateOut(provider=c.provider, model=c.model, temperature=c.temperature, text=mask(c.text),
                        scores=c.evaluation.score_dict() if c.evaluation else {}, overall=round(c.overall, 4),
                        latency_ms=round(c.latency_ms, 2), usage=c.usage.to_dict(), cost_usd=c.cost_usd,
                        passed_thresholds=c.passed, selected=c is best, error=c.error, error_code=c.error_code)


def _ensemble_info(result: EnsembleResult, mask: Callable[[str], str]) -> EnsembleInfo:
    return EnsembleInfo(partial=result.partial,
                        consensus_score=round(result.consensus_score, 4), consensus_reached=result.consensus_reached,
                        consensus_threshold=result.consensus.threshold, selection_method=result.selection_method,
                        providers_used=result.providers_used, clusters=result.clusters,
                        candidates=[_candidate_out(c, result.best, mask) for c in result.candidates])
