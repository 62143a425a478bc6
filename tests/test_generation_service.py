from __future__ import annotations

import asyncio
import json
from html.parser import HTMLParser
from typing import Any

import pytest

from rag_ray.errors import InvalidInput, ProviderUnavailable
from rag_ray.generation.formats import HTML_TAGS
from rag_ray.generation.service import (
    EnsembleRequest,
    GenerationResponse,
    GenerationService,
    GenerationSettings,
    RagGenerateRequest,
    SingleRequest,
    parse_request,
)
from rag_ray.llm.fake import FakeLLM
from tests.test_generation_consensus import AGREEING, OUTLIER
from tests.test_generation_fixtures import GROUNDED, HALLUCINATED, HALLUCINATION, QUERY, evaluator, hits, llm

# The request bodies exactly as the seed documents them.
SEED_SINGLE = {"query": "머신러닝과 딥러닝의 차이점을 설명해주세요", "mode": "fast",
               "context": "AI 기술 관련 교육 자료", "model": "gpt-4", "temperature": 0.7, "max_tokens": 1000,
               "response_format": "markdown"}
SEED_ENSEMBLE = {"query": "인공지능의 윤리적 고려사항에 대해 분석해주세요", "mode": "high_quality", "ensemble_size": 3,
                 "consensus_threshold": 0.7, "enable_parallel_generation": True,
                 "evaluation_metrics": ["relevance", "accuracy", "completeness"], "output_format": "structured",
                 "custom_instructions": "다양한 관점에서 균형잡힌 분석 제공"}
SEED_RAG = {"query": "최신 트랜스포머 아키텍처의 발전 동향",
            "retrieval_config": {"k": 10, "search_strategy": "hybrid", "include_metadata": True,
                                 "enable_reranking": True},
            "generation_config": {"mode": "ensemble", "ensemble_size": 2, "prompt_strategy": "contextual",
                                  "enable_post_processing": True, "response_format": "markdown"},
            "quality_filters": {"min_relevance": 0.8, "min_completeness": 0.7, "enable_fact_checking": True}}


def service(llms: Any) -> GenerationService:
    return GenerationService(llms, evaluator(), settings=GenerationSettings(context_window=4096))


def rag_request(**generation: Any) -> RagGenerateRequest:
    return parse_request(RagGenerateRequest, {"query": QUERY, "generation_config": generation,
                                              "quality_filters": {"enable_fact_checking": True}})


def test_seed_bodies_validate() -> None:
    assert parse_request(SingleRequest, SEED_SINGLE).model == "gpt-4"
    assert parse_request(EnsembleRequest, SEED_ENSEMBLE).ensemble_size == 3
    rag = parse_request(RagGenerateRequest, SEED_RAG)
    assert rag.generation_config.prompt_strategy == "contextual" and rag.quality_filters.enable_fact_checking


@pytest.mark.parametrize(("model", "body", "field"), [
    (SingleRequest, {**SEED_SINGLE, "surprise": 1}, "surprise"),
    (SingleRequest, {**SEED_SINGLE, "max_tokens": 100_000}, "max_tokens"),
    (SingleRequest, {**SEED_SINGLE, "query": "x" * 4001}, "query"),
    (SingleRequest, {**SEED_SINGLE, "query": "   "}, "query"),
    (SingleRequest, {**SEED_SINGLE, "response_format": "pdf"}, "response_format"),
    (SingleRequest, {**SEED_SINGLE, "prompt_strategy": "telepathy"}, "prompt_strategy"),
    (EnsembleRequest, {**SEED_ENSEMBLE, "ensemble_size": 6}, "ensemble_size"),
    (EnsembleRequest, {**SEED_ENSEMBLE, "evaluation_metrics": ["vibes"]}, "evaluation_metrics.0"),
    (EnsembleRequest, {**SEED_ENSEMBLE, "selection_method": "coin"}, "selection_method"),
    (RagGenerateRequest, {**SEED_RAG, "retrieval_config": {"k": 0}}, "retrieval_config.k"),
    (RagGenerateRequest, {**SEED_RAG, "quality_filters": {"min_relevance": 2}}, "quality_filters.min_relevance"),
    (RagGenerateRequest, {**SEED_RAG, "generation_config": {"oops": True}}, "generation_config.oops"),
])
def test_bad_bodies_name_the_field(model: Any, body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_request(model, body)
    assert err.value.field == field


def test_single_with_seed_body() -> None:
    answer = "머신러닝은 데이터에서 학습합니다. 딥러닝은 신경망을 씁니다."
    svc = service({"openai:gpt-4": llm(answer, provider="openai")})
    response = asyncio.run(svc.generate_single(parse_request(SingleRequest, SEED_SINGLE)))
    assert response.mode == "single" and response.provider == "openai" and response.ensemble is None
    assert response.response_format == "markdown" and "딥러닝" in response.response
    assert 0 <= response.quality.overall <= 1 and response.context.contexts_used == 1
    assert response.usage["total_tokens"] > 0 and set(response.timings) >= {"total_ms", "generation_ms"}
    GenerationResponse.model_validate_json(response.model_dump_json())


def test_single_unknown_model_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as err:
        asyncio.run(service({"a:m": llm("x")}).generate_single(SingleRequest(query="q", model="gpt-9")))
    assert err.value.field == "model"


def test_ensemble_with_seed_body_returns_structured_sections() -> None:
    svc = service({"a:m": llm(AGREEING[0], provider="a"), "b:m": llm(AGREEING[1], provider="b"),
                   "c:m": llm(OUTLIER, provider="c")})
    response = asyncio.run(svc.generate_ensemble(parse_request(EnsembleRequest, SEED_ENSEMBLE)))
    assert response.structured is not None and set(response.structured) >= {"summary", "details", "sources"}
    info = response.ensemble
    assert info is not None and len(info.candidates) == 3 and info.selection_method == "consensus_weighted"
    assert set(response.quality.scores) == {"relevance", "accuracy", "completeness"}
    assert response.provider in {"a", "b"} and sum(c.selected for c in info.candidates) == 1


def test_ensemble_majority_of_three_beats_the_outlier() -> None:
    llms = {f"p{i}:m": llm(text, provider=f"p{i}") for i, text in enumerate([OUTLIER, *AGREEING])}
    request = EnsembleRequest(query=QUERY, ensemble_size=4, selection_method="majority_cluster",
                              evaluation_metrics=["clarity"])  # clarity alone cannot tell them apart
    response = asyncio.run(service(llms).generate_ensemble(request))
    assert response.ensemble is not None
    assert sorted(response.ensemble.clusters[0]) == [1, 2, 3] and response.provider != "p0"


def test_rag_drops_the_unsupported_sentence_and_cites_chunks() -> None:
    svc = service({"a:m": llm(HALLUCINATED, provider="a")})
    response = asyncio.run(svc.generate_rag(rag_request(mode="single"), hits()))
    assert HALLUCINATION not in response.response
    assert response.quality.removed_sentences[0] == HALLUCINATION and len(response.quality.removed_sentences) == 2
    assert "Self-attention computes weights" in response.response
    assert HALLUCINATION in response.quality.unsupported_sentences
    assert [c.chunk_id for c in response.citations] == ["c1"]
    assert [s.chunk_id for s in response.context.sources] == ["c0", "c1", "c2"]
    assert response.context.sources[0].metadata == {"title": "Doc 0"}


def test_rag_ensemble_picks_grounded_and_flags_when_asked() -> None:
    svc = service({"a:m": llm(HALLUCINATED, provider="a"), "b:m": llm(GROUNDED, provider="b")})
    response = asyncio.run(svc.generate_rag(rag_request(mode="ensemble", ensemble_size=2), hits()))
    assert response.provider == "b" and response.quality.unsupported_sentences == []
    assert [c.number for c in response.citations] == [1, 2]
    body = {"query": QUERY, "generation_config": {"mode": "single"},
            "quality_filters": {"enable_fact_checking": True, "fact_check_action": "flag"}}
    flagged = asyncio.run(service({"a:m": llm(HALLUCINATED)}).generate_rag(
        parse_request(RagGenerateRequest, body), hits()))
    assert f"{HALLUCINATION} (unverified)" in flagged.response


@pytest.mark.parametrize("fmt", ["plain_text", "markdown", "html", "json", "structured"])
def test_every_format_through_the_service(fmt: str) -> None:
    text = GROUNDED + "\n- <b>bold</b> & **strong** [2]"
    response = asyncio.run(service({"a:m": llm(text)}).generate_rag(
        rag_request(mode="single", response_format=fmt), hits()))
    assert response.response_format == fmt
    if fmt == "json":
        assert json.loads(response.response)["citations"][0]["chunk_id"] == "c0"
    if fmt == "html":
        tags: list[str] = []
        parser = HTMLParser()
        parser.handle_starttag = lambda tag, attrs: tags.append(tag)  # type: ignore[method-assign]
        parser.feed(response.response)
        assert set(tags) <= HTML_TAGS and "b" not in tags


def test_rag_with_no_hits_still_answers() -> None:
    response = asyncio.run(service({"a:m": llm(GROUNDED)}).generate_rag(rag_request(mode="single"), []))
    assert response.context.contexts_used == 0 and response.quality.scores["accuracy"].confidence == 0


def test_all_providers_failing_is_provider_unavailable() -> None:
    llms = {f"{p}:m": FakeLLM("m", provider=p, fail_with=RuntimeError("down")) for p in "ab"}
    with pytest.raises(ProviderUnavailable):
        asyncio.run(service(llms).generate_ensemble(EnsembleRequest(query=QUERY)))
