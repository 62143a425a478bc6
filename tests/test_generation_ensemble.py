from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from rag_ray.errors import InvalidInput, ProviderServerError, ProviderTimeout, ProviderUnavailable, RequestTimeout
from rag_ray.generation.ensemble import EnsembleConfig, EnsembleGenerator, plan_candidates
from rag_ray.generation.evaluation import ProviderQualityTracker, QualityThresholds
from rag_ray.generation.prompts import PromptEngineer, PromptRequest
from rag_ray.generation.single import LLMPoolSource, LLMSource, ManagerSource, SingleGenerator, as_source
from rag_ray.llm.base import ChatMessage, Completion, GenerationParams, StreamChunk, Usage
from rag_ray.llm.fake import FakeLLM
from tests.test_generation_fixtures import GROUNDED, HALLUCINATED, OFF_TOPIC, QUERY, chunks, evaluator, llm

PROMPT = PromptEngineer().build(PromptRequest(QUERY, chunks()), "structured")
PARAMS = GenerationParams(temperature=0.5, max_tokens=256)


def run(generator: EnsembleGenerator, **kwargs: object):  # type: ignore[no-untyped-def]
    return asyncio.run(generator.generate(QUERY, PROMPT, PARAMS, **kwargs))  # type: ignore[arg-type]


def pool(**answers: str) -> dict[str, FakeLLM]:
    return {f"{name}:m": llm(text, provider=name) for name, text in answers.items()}


def test_ensemble_selects_the_grounded_answer_and_reports_every_candidate() -> None:
    result = run(EnsembleGenerator(pool(a=HALLUCINATED, b=GROUNDED, c=OFF_TOPIC), evaluator()))
    assert result.best.provider == "b" and result.best.text == GROUNDED
    assert [c.provider for c in result.candidates] == ["a", "b", "c"]
    for c in result.candidates:
        assert c.ok and c.evaluation is not None and c.usage.completion_tokens > 0
        assert set(c.evaluation.scores) == {"relevance", "accuracy", "completeness", "clarity", "coherence"}
    assert result.providers_used == ["a", "b", "c"] and result.selection_method == "consensus_weighted"
    assert 0 <= result.consensus_score <= 1
    assert result.timings.total_ms >= result.timings.generation_ms


@pytest.mark.parametrize("method", ["best_weighted_score", "majority_cluster", "consensus_weighted"])
def test_every_method_prefers_grounded_over_hallucinated(method: str) -> None:
    result = run(EnsembleGenerator(pool(a=HALLUCINATED, b=GROUNDED), evaluator()), selection_method=method, size=2)
    assert result.best.provider == "b" and result.selection_method == method


def test_one_failing_candidate_does_not_fail_the_ensemble() -> None:
    llms = pool(a=GROUNDED, b=HALLUCINATED)
    llms["c:m"] = FakeLLM("m", provider="c", fail_with=ProviderServerError("c: HTTP 500", provider="c"))
    result = run(EnsembleGenerator(llms, evaluator()))
    failed = result.candidates[2]
    assert not failed.ok and failed.error_code == "provider_server_error" and failed.evaluation is None
    assert result.best.provider == "a" and result.providers_used == ["a", "b"]


def test_slow_candidate_times_out_alone() -> None:
    llms = pool(a=GROUNDED)
    llms["slow:m"] = llm(GROUNDED, provider="slow", delay_s=30)
    result = run(EnsembleGenerator(llms, evaluator(), EnsembleConfig(candidate_timeout_s=0.05)), size=2)
    slow = result.candidates[1]
    assert slow.error_code == "provider_timeout" and isinstance(slow.exception, ProviderTimeout)
    assert result.best.provider == "a"


def test_all_failing_raises_provider_unavailable() -> None:
    llms = {f"{p}:m": FakeLLM("m", provider=p, fail_with=RuntimeError(f"{p} down")) for p in "ab"}
    with pytest.raises(ProviderUnavailable) as err:
        run(EnsembleGenerator(llms, evaluator()))
    assert len(err.value.details["errors"]) == 3 and "a down" in err.value.details["errors"][0]


def test_one_provider_gives_samples_at_different_temperatures() -> None:
    single = llm(GROUNDED, provider="solo")
    result = run(EnsembleGenerator(single, evaluator()))
    assert single.calls == 3
    assert [c.temperature for c in result.candidates] == [0.5, 0.8, 0.2]


def test_plan_spreads_providers_then_temperatures_and_respects_weights() -> None:
    plans = plan_candidates(["a", "b"], 5, 1.9, weights={"a": 0.2, "b": 1.0})
    assert [(p.provider, p.temperature) for p in plans] == [("b", 1.9), ("a", 1.9), ("b", 2.0), ("a", 2.0),
                                                           ("b", 1.6)]


class ConcurrencyProbe:
    """An LLM that records how many calls overlap, yielding to the loop instead of sleeping."""

    provider, model = "probe", "m"

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        self.in_flight -= 1
        return Completion(GROUNDED, self.provider, self.model, Usage(10, 10))

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams):  # type: ignore[no-untyped-def]
        yield StreamChunk(finish_reason="stop")


@pytest.mark.parametrize(("parallel", "peak"), [(True, 3), (False, 1)])
def test_parallel_switch(parallel: bool, peak: int) -> None:
    probe = ConcurrencyProbe()
    result = run(EnsembleGenerator(probe, evaluator()), parallel=parallel)
    assert probe.peak == peak and len(result.candidates) == 3
    assert all(c.evaluation is not None for c in result.candidates)


def test_thresholds_filter_candidates_before_selection() -> None:
    generator = EnsembleGenerator(pool(a=HALLUCINATED, b=GROUNDED), evaluator())
    result = run(generator, selection_method="best_weighted_score", size=2,
                 thresholds=QualityThresholds(min_accuracy=0.9))
    assert result.candidates[0].failed_thresholds == ["accuracy"] and result.candidates[1].passed
    assert result.eligible == [result.candidates[1]] and result.warnings == []
    nobody = run(generator, size=2, thresholds=QualityThresholds(min_overall=0.99))
    assert nobody.warnings and len(nobody.eligible) == 2


def test_tracker_learns_which_provider_hallucinates() -> None:
    tracker = ProviderQualityTracker(alpha=0.5)
    generator = EnsembleGenerator(pool(a=HALLUCINATED, b=GROUNDED), evaluator(), tracker=tracker)
    for _ in range(3):
        run(generator, size=2)
    weights = tracker.weights()
    assert weights["b:m"] == 1.0 and weights["a:m"] < 1.0


def test_bad_sizes_and_providers_are_invalid_input() -> None:
    generator = EnsembleGenerator(pool(a=GROUNDED), evaluator())
    with pytest.raises(InvalidInput) as err:
        run(generator, size=6)
    assert err.value.field == "ensemble_size"
    with pytest.raises(InvalidInput) as err:
        run(generator, providers=["nope:m"])
    assert err.value.field == "providers"
    with pytest.raises(InvalidInput):
        run(generator, selection_method="vibes")


# ---- single / sources ----------------------------------------------------------------------------------------
def test_single_generator_scores_the_answer() -> None:
    result = asyncio.run(SingleGenerator(llm(GROUNDED), evaluator()).generate(QUERY, PROMPT, PARAMS))
    assert result.candidate.text == GROUNDED and result.candidate.evaluation is not None
    assert result.candidate.evaluation.unsupported_sentences == []
    assert result.timings.total_ms >= result.timings.generation_ms


def test_single_generator_timeouts() -> None:
    slow = llm(GROUNDED, delay_s=30)
    with pytest.raises(ProviderTimeout):
        asyncio.run(SingleGenerator(slow, evaluator(), timeout_s=0.05).generate(QUERY, PROMPT, PARAMS))
    with pytest.raises(RequestTimeout):
        asyncio.run(SingleGenerator(slow, evaluator(), timeout_s=10, request_timeout_s=0.05)
                    .generate(QUERY, PROMPT, PARAMS))


def test_single_generator_raises_provider_errors() -> None:
    failing = FakeLLM("m", fail_with=ProviderServerError("HTTP 503", provider="fake"))
    with pytest.raises(ProviderServerError):
        asyncio.run(SingleGenerator(failing, evaluator()).generate(QUERY, PROMPT, PARAMS))


def test_as_source_adapts_llm_pool_and_manager() -> None:
    assert isinstance(as_source(llm("x")), LLMSource)
    assert isinstance(as_source(pool(a="x")), LLMPoolSource)
    source = LLMPoolSource(pool(a="x", b="y"))
    assert as_source(source) is source
    with pytest.raises(InvalidInput):
        asyncio.run(source.generate([], PARAMS, provider="zzz"))
    with pytest.raises(TypeError):
        as_source(42)


def test_manager_source_routes_to_the_requested_entry() -> None:
    manager_mod = pytest.importorskip("rag_ray.providers.manager")
    manager = manager_mod.LLMManager([manager_mod.LLMEntry.of(llm(HALLUCINATED, provider="a")),
                                      manager_mod.LLMEntry.of(llm(GROUNDED, provider="b"))])
    source = as_source(manager)
    assert isinstance(source, ManagerSource) and source.provider_ids() == ["a:m", "b:m"]
    result = run(EnsembleGenerator(source, evaluator()), size=2)
    assert [c.provider for c in result.candidates] == ["a", "b"] and result.best.provider == "b"
