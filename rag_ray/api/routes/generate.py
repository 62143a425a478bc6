"""``POST /generate/single``, ``/generate/ensemble`` and ``/generate/rag``: scored answer generation.

Bodies are the seed's (``rag_ray.generation.service`` models: unknown fields refused, a bad value is a 422 naming
the field, e.g. ``retrieval_config.k``). ``/generate/rag`` is the RAG pipeline (``services.rag``): it retrieves
through ``RetrievalService.search``, so the caller's access filter always applies and only the chunks it returns
ever reach the prompt, fitted to the window of the model(s) that answer (``context.used`` / ``context.dropped`` /
``context.window``), and masks the answer for the caller.

The ``GenerationService`` is ``services.generation`` (in Serve its evaluator runs in the evaluator deployment).

``/generate/rag`` also takes ``conversation_id`` (see ``routes.conversations``): a follow-up is made self-contained
before retrieval (``condensed_query``); its ``citations`` are the span citations of ``/query``, with
``dropped_markers`` and the ``answer_id`` of its record, whose evaluation scores feed the ``quality`` strategy.

Every answer's quality (overall and per metric) and, for ensembles, the consensus score are exported as
histograms on ``/metrics``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field

from rag_ray.answers.turns import conclude, generated_draft
from rag_ray.api.deps import PrincipalDep, ServicesDep
from rag_ray.api.metrics import SCORE_BUCKETS, Metrics
from rag_ray.api.middleware import use_request_timeout
from rag_ray.api.routes.conversations import TurnOut, conversation_id_field
from rag_ray.generation import (
    EnsembleRequest,
    GenerationResponse,
    RagGenerateRequest,
    SingleRequest,
    parse_request,
)
from rag_ray.generation.citations import CitationOut, CitationsOut

router = APIRouter(prefix="/generate", tags=["generate"])

QUALITY_METRIC = "rag_generation_quality"
CONSENSUS_METRIC = "rag_generation_consensus"


# ---- metrics ----------------------------------------------------------------------------------------------
def record_quality(metrics: Metrics, endpoint: str, response: GenerationResponse) -> None:
    labels = {"endpoint": endpoint, "mode": response.mode}
    metrics.observe(QUALITY_METRIC, response.quality.overall, {**labels, "metric": "overall"}, buckets=SCORE_BUCKETS,
                    help="Quality score of the returned answer (overall and per metric)")
    for name, score in response.quality.scores.items():
        metrics.observe(QUALITY_METRIC, score.score, {**labels, "metric": name}, buckets=SCORE_BUCKETS)
    if response.ensemble is not None:
        metrics.observe(CONSENSUS_METRIC, response.ensemble.consensus_score, labels, buckets=SCORE_BUCKETS,
                        help="Agreement among ensemble candidates")


def answered(request: Request, endpoint: str, response: GenerationResponse) -> GenerationResponse:
    record_quality(request.app.state.metrics, endpoint, response)
    return response


# ---- /generate/rag: conversations and span citations ------------------------------------------------------
class ConversationRef(BaseModel):
    conversation_id: str | None = conversation_id_field()


class RagGenerationResponse(GenerationResponse, TurnOut):
    """``/generate/rag``'s answer: ``citations`` as on ``/query`` (chunk, document and span of each ``[n]``; spans
    index the chunk texts, ``marker_offset`` the ``response``), the answer's record and its conversation."""

    citations: list[CitationOut]  # type: ignore[assignment]  # the span citations replace the snippet ones
    dropped_markers: list[int] = Field(default_factory=list)


# ---- routes -----------------------------------------------------------------------------------------------
# Bodies are validated with ``parse_request`` (the generation library's own models and caps), so the same
# InvalidInput, naming the exact field (e.g. ``retrieval_config.k``), comes from HTTP and from library callers.
SINGLE_EXAMPLE = {"query": "머신러닝과 딥러닝의 차이점을 설명해주세요", "mode": "fast",
                  "context": "AI 기술 관련 교육 자료", "model": "gpt-4", "temperature": 0.7, "max_tokens": 1000,
                  "response_format": "markdown"}
ENSEMBLE_EXAMPLE = {"query": "인공지능의 윤리적 고려사항에 대해 분석해주세요", "mode": "high_quality",
                    "ensemble_size": 3, "consensus_threshold": 0.7, "enable_parallel_generation": True,
                    "evaluation_metrics": ["relevance", "accuracy", "completeness"], "output_format": "structured",
                    "custom_instructions": "다양한 관점에서 균형잡힌 분석 제공"}
RAG_EXAMPLE = {"query": "최신 트랜스포머 아키텍처의 발전 동향",
               "retrieval_config": {"k": 10, "search_strategy": "hybrid", "include_metadata": True,
                                    "enable_reranking": True},
               "generation_config": {"mode": "ensemble", "ensemble_size": 2, "prompt_strategy": "contextual",
                                     "enable_post_processing": True, "response_format": "markdown"},
               "quality_filters": {"min_relevance": 0.8, "min_completeness": 0.7, "enable_fact_checking": True}}


@router.post("/single", summary="Fast mode: one provider, one scored answer")
async def generate_single(request: Request, body: Annotated[dict[str, Any], Body(examples=[SINGLE_EXAMPLE])],
                          _: PrincipalDep, services: ServicesDep) -> GenerationResponse:
    parsed = parse_request(SingleRequest, body)
    use_request_timeout(parsed.timeout_s, services.settings.max_request_timeout_s)
    return answered(request, "single", await services.generation.generate_single(parsed))


@router.post("/ensemble", summary="High-quality mode: several candidates scored, compared and one selected")
async def generate_ensemble(request: Request, body: Annotated[dict[str, Any], Body(examples=[ENSEMBLE_EXAMPLE])],
                            _: PrincipalDep, services: ServicesDep) -> GenerationResponse:
    parsed = parse_request(EnsembleRequest, body)
    use_request_timeout(parsed.timeout_s, services.settings.max_request_timeout_s)
    return answered(request, "ensemble", await services.generation.generate_ensemble(parsed))


@router.post("/rag", summary="Retrieve under the caller's access filter, then generate (single or ensemble)")
async def generate_rag(request: Request, body: Annotated[dict[str, Any], Body(examples=[RAG_EXAMPLE])],
                       principal: PrincipalDep,
                       services: ServicesDep) -> RagGenerationResponse:
    ref = parse_request(ConversationRef, {"conversation_id": body.pop("conversation_id", None)})
    parsed = parse_request(RagGenerateRequest, body)
    use_request_timeout(parsed.timeout_s, services.settings.max_request_timeout_s)
    thread = await services.conversations.begin(principal, ref.conversation_id, parsed.query)
    asked = parsed if thread.condensed.method == "none" else parsed.model_copy(update={"query": thread.query})
    result = await services.rag.generate(principal, asked)
    done = await conclude(services.conversations, services.answers, principal, thread,
                          generated_draft("generate_rag", thread, result))
    answered(request, "rag", result.response)
    return RagGenerationResponse(**{**result.response.model_dump(), **TurnOut.of(thread, done).model_dump(),
                                    **CitationsOut.of(result.cited).model_dump()})
