"""Single and ensemble answer generation: prompts, context budgeting, evaluation, consensus, output formats.

Entry point for the HTTP layer: ``GenerationService`` (see ``service.py`` for the request/response models).
Generators depend only on ``CandidateSource`` (``single.py``): wrap an LLM, a dict of LLMs or the provider
manager with ``as_source``.
"""

from rag_ray.generation.consensus import SELECTORS, ConsensusResult, agreement_matrix, analyse, select
from rag_ray.generation.context import INJECTION_MODES, ContextChunk, FittedContext, UsedChunk, fit_to_budget
from rag_ray.generation.ensemble import EnsembleConfig, EnsembleGenerator, EnsembleResult, plan_candidates
from rag_ray.generation.evaluation import (
    METRICS,
    Evaluation,
    EvaluationWeights,
    EvaluatorConfig,
    MetricScore,
    ProviderQualityTracker,
    QualityThresholds,
    ResponseEvaluator,
    parse_judge_score,
)
from rag_ray.generation.formats import FORMATTERS, QualityFilters, ResponseDocument, apply_quality_filters, render
from rag_ray.generation.prompts import (
    STRATEGIES,
    TEMPLATES,
    EngineeredPrompt,
    PromptEngineer,
    PromptRequest,
    PromptStrategy,
    PromptTemplate,
    register_strategy,
)
from rag_ray.generation.service import (
    EnsembleRequest,
    GenerationResponse,
    GenerationService,
    GenerationSettings,
    RagGenerateRequest,
    SingleRequest,
    parse_request,
)
from rag_ray.generation.single import (
    Candidate,
    CandidateSource,
    LLMPoolSource,
    LLMSource,
    ManagerSource,
    SingleGenerator,
    as_source,
)

__all__ = [
    "FORMATTERS", "INJECTION_MODES", "METRICS", "SELECTORS", "STRATEGIES", "TEMPLATES", "Candidate",
    "CandidateSource", "ConsensusResult", "ContextChunk", "EngineeredPrompt", "EnsembleConfig", "EnsembleGenerator",
    "EnsembleRequest", "EnsembleResult", "Evaluation", "EvaluationWeights", "EvaluatorConfig", "FittedContext",
    "GenerationResponse", "GenerationService", "GenerationSettings", "LLMPoolSource", "LLMSource", "ManagerSource",
    "MetricScore", "PromptEngineer", "PromptRequest", "PromptStrategy", "PromptTemplate", "ProviderQualityTracker",
    "QualityFilters", "QualityThresholds", "RagGenerateRequest", "ResponseDocument", "ResponseEvaluator",
    "SingleGenerator", "SingleRequest", "UsedChunk", "agreement_matrix", "analyse", "apply_quality_filters",
    "as_source", "fit_to_budget", "parse_judge_score", "parse_request", "plan_candidates", "register_strategy",
    "render", "select",
]
