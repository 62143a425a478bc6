from __future__ import annotations

import asyncio

import pytest

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.generation.evaluation import (
    EvaluationWeights,
    ProviderQualityTracker,
    QualityThresholds,
    ResponseEvaluator,
    parse_judge_score,
)
from rag_ray.llm.fake import FakeLLM
from tests.test_generation_fixtures import (
    CONTEXT_KO,
    GROUNDED,
    GROUNDED_KO,
    HALLUCINATED,
    HALLUCINATED_KO,
    HALLUCINATION,
    OFF_TOPIC,
    QUERY,
    QUERY_KO,
    evaluator,
    fixed,
    used,
)


def test_grounded_answer_ranks_first() -> None:
    grounded, hallucinated, off = evaluator().evaluate_many(QUERY, [GROUNDED, HALLUCINATED, OFF_TOPIC], used())
    assert grounded.overall > hallucinated.overall > off.overall
    assert grounded.score("accuracy") > hallucinated.score("accuracy") > off.score("accuracy")
    assert grounded.score("relevance") > off.score("relevance")
    for e in (grounded, hallucinated, off):
        assert all(0.0 <= s.score <= 1.0 for s in e.scores.values())


def test_unsupported_sentences_are_listed() -> None:
    grounded, hallucinated = evaluator().evaluate_many(QUERY, [GROUNDED, HALLUCINATED], used())
    assert grounded.unsupported_sentences == []
    assert HALLUCINATION in hallucinated.unsupported_sentences
    assert len(hallucinated.unsupported_sentences) == 2  # the 1995 claim and the 512 quantum processors


def test_korean_grounded_answer_ranks_first() -> None:
    grounded, hallucinated = evaluator().evaluate_many(QUERY_KO, [GROUNDED_KO, HALLUCINATED_KO], used(CONTEXT_KO))
    assert grounded.overall > hallucinated.overall
    assert grounded.unsupported_sentences == []
    assert len(hallucinated.unsupported_sentences) == 2
    # 머신러닝은/머신러닝과 and 딥러닝은/딥러닝의 match once particles are stripped; 차이점 is never named
    assert grounded.score("completeness") == pytest.approx(2 / 3)


def test_without_context_accuracy_is_not_judged() -> None:
    e = evaluator().evaluate(QUERY, GROUNDED)
    assert e.scores["accuracy"].confidence == 0 and e.unsupported_sentences == []
    only_accuracy = evaluator(weights=EvaluationWeights(1, 1, 0, 0, 0)).evaluate(QUERY, GROUNDED)
    assert only_accuracy.overall == pytest.approx(only_accuracy.score("relevance"))


def test_weights_and_metric_selection() -> None:
    e = evaluator(weights=EvaluationWeights(0, 1, 0, 0, 0)).evaluate(QUERY, HALLUCINATED, used())
    assert e.overall == pytest.approx(e.score("accuracy"))
    subset = evaluator().evaluate(QUERY, GROUNDED, used(), metrics=["relevance", "clarity"])
    assert set(subset.scores) == {"relevance", "clarity"}


def test_thresholds_report_failures() -> None:
    ev = evaluator(thresholds=QualityThresholds(min_accuracy=0.9, min_overall=0.5))
    grounded, hallucinated = ev.evaluate_many(QUERY, [GROUNDED, HALLUCINATED], used())
    assert ev.passes(grounded)
    assert "accuracy" in ev.thresholds.failures(hallucinated)


def test_invalid_citations_are_reported() -> None:
    e = evaluator().evaluate(QUERY, GROUNDED + " Attention is parallel [7].", used())
    assert e.invalid_citations == [7]


def test_repetition_lowers_clarity_and_contradiction_lowers_coherence() -> None:
    ev = evaluator()
    sentence = "Self-attention computes weights between all positions of the input sequence."
    clean, repeated = ev.evaluate_many(QUERY, [GROUNDED, " ".join([sentence] * 4)], used())
    assert repeated.score("clarity") < clean.score("clarity")
    contradiction = (f"{sentence} Self-attention does not compute weights between all positions of the input "
                     "sequence.")
    consistent = f"{sentence} It uses query, key and value vectors for every position."
    bad, good = ev.evaluate_many(QUERY, [contradiction, consistent], used())
    assert bad.score("coherence") < good.score("coherence")


def test_all_embeddings_in_one_call() -> None:
    embedder = FakeEmbedder()
    ResponseEvaluator(embedder).evaluate_many(QUERY, [GROUNDED, HALLUCINATED, OFF_TOPIC], used())
    assert embedder.calls == 1


def test_empty_answer_scores_zero() -> None:
    e = evaluator().evaluate(QUERY, "", used())
    assert e.score("relevance") == 0 and e.score("completeness") == 0 and e.overall < 0.3


@pytest.mark.parametrize(("reply", "expected"), [
    ('{"score": 8, "reason": "good"}', 0.8),
    ('Sure! Here you go:\n```json\n{"reason": "ok", "score": 0.65}\n```', 0.65),
    ('{"score": 72}', 0.72),
    ("Score: 7/10 because it is fine", 0.7),
    ("score = 3", 0.3),
    ('{"score": "high"}', None),
    ("no idea", None),
])
def test_parse_judge_score(reply: str, expected: float | None) -> None:
    value = parse_judge_score(reply)
    assert value == (pytest.approx(expected) if expected is not None else None)


def test_llm_judge_is_weighted_in_when_configured() -> None:
    judge = FakeLLM("judge", provider="judge", responder=fixed('{"score": 10, "reason": "grounded"}'))
    ev = evaluator(judge=judge)
    [e] = asyncio.run(ev.aevaluate_many(QUERY, [HALLUCINATED], used()))
    assert e.scores["llm_judge"].score == 1.0 and judge.calls == 1
    [plain] = evaluator().evaluate_many(QUERY, [HALLUCINATED], used())
    assert e.overall > plain.overall


def test_failing_judge_is_not_counted() -> None:
    judge = FakeLLM("judge", fail_with=RuntimeError("judge down"))
    [e] = asyncio.run(evaluator(judge=judge).aevaluate_many(QUERY, [GROUNDED], used()))
    [plain] = evaluator().evaluate_many(QUERY, [GROUNDED], used())
    assert e.scores["llm_judge"].confidence == 0 and e.overall == pytest.approx(plain.overall)


def test_quality_tracker_downweights_low_scorers() -> None:
    tracker = ProviderQualityTracker(alpha=0.5, prior=0.7, floor=0.1)
    for _ in range(5):
        tracker.record("good", 0.9)
        tracker.record("bad", 0.2)
    weights = tracker.weights(["good", "bad", "new"])
    assert weights["good"] == 1.0 and weights["bad"] < 0.4 and weights["bad"] >= 0.1
    assert 0.7 < weights["new"] < 1.0  # unseen providers start at the prior
    assert tracker.snapshot()["bad"]["count"] == 5


class CountingEmbedder(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def embed(self, texts, *, input_type="document"):  # type: ignore[no-untyped-def]
        self.sizes.append(len(texts))
        return super().embed(texts, input_type=input_type)


def test_session_embeds_query_and_context_once() -> None:
    embedder = CountingEmbedder()
    session = ResponseEvaluator(embedder).session(QUERY, used())
    [first] = session.evaluate_many([GROUNDED])
    [second] = session.evaluate_many([GROUNDED])  # identical sentences in one call are embedded once too
    assert embedder.sizes == [1 + 3 + 3, 3]
    assert first.overall == pytest.approx(second.overall)
    assert first.answer_vector is not None and first.answer_vector.shape == (embedder.dimension,)
