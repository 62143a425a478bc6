"""Fusion math, language-aware weights, the feature reranker and post-processing (no Milvus)."""

from __future__ import annotations

import math

import pytest

from rag_ray.errors import InvalidInput
from rag_ray.retrieval.fusion import FusionConfig, fuse, minmax, rrf, weighted
from rag_ray.retrieval.rerank import (
    FeatureReranker,
    NoRerank,
    RerankContext,
    apply_threshold,
    create_reranker,
    drop_near_duplicates,
)
from rag_ray.text.korean import has_hangul, korean_terms, lexical_text, light_stem
from rag_ray.types import SearchHit


def hit(cid: str, score: float, text: str = "") -> SearchHit:
    return SearchHit(chunk_id=cid, doc_id=cid, source_uri=f"mem://{cid}", chunk_index=0, text=text or cid,
                     score=score)


def ids(hits: list[SearchHit]) -> list[str]:
    return [h.chunk_id for h in hits]


def test_rrf_sums_weighted_reciprocal_ranks() -> None:
    dense = [hit("a", 0.9), hit("b", 0.8), hit("c", 0.7)]
    sparse = [hit("c", 12.0), hit("a", 3.0)]
    fused = rrf([dense, sparse], k=60)
    scores = {h.chunk_id: h.score for h in fused}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    assert ids(fused) == ["a", "c", "b"]
    weighted_rrf = rrf([dense, sparse], weights=[0.0, 1.0], k=60)
    assert ids(weighted_rrf)[:2] == ["c", "a"]


def test_minmax_and_weighted_convex_combination() -> None:
    assert minmax([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert minmax([5.0, 5.0]) == [1.0, 1.0]
    assert minmax([]) == []
    dense = [hit("a", 0.9), hit("b", 0.5), hit("c", 0.1)]
    sparse = [hit("c", 20.0), hit("d", 10.0), hit("b", 0.0)]
    fused = {h.chunk_id: h.score for h in weighted([dense, sparse], [0.7, 0.3])}
    assert fused["a"] == pytest.approx(0.7)  # missing from the sparse leg: 0 there
    assert fused["b"] == pytest.approx(0.7 * 0.5 + 0.0)
    assert fused["c"] == pytest.approx(0.0 + 0.3)
    assert fused["d"] == pytest.approx(0.3 * 0.5)
    assert all(0.0 <= s <= 1.0 for s in fused.values())


def test_fusion_keeps_first_seen_hit_and_orders_ties_stably() -> None:
    fused = weighted([[hit("a", 1.0, "dense text")], [hit("a", 7.0, "sparse text"), hit("b", 7.0)]], [0.5, 0.5])
    assert fused[0].text == "dense text"
    assert ids(rrf([[hit("x", 1), hit("y", 1)]])) == ["x", "y"]


def test_korean_queries_get_the_korean_weights() -> None:
    config = FusionConfig(method="weighted", dense_weight=0.6, korean_dense_weight=0.1)
    assert config.weights_for("what causes scurvy") == (0.6, pytest.approx(0.4))
    assert config.weights_for("건강검진 대상자는 누구인가요?") == (0.1, pytest.approx(0.9))
    assert config.weights_for("KOSPI 200 지수") == (0.1, pytest.approx(0.9))  # 2 of 7 letters are Hangul
    assert FusionConfig(korean_dense_weight=None).weights_for("건강검진") == (0.5, 0.5)
    dense, sparse = [hit("d", 1.0)], [hit("s", 1.0)]
    assert ids(fuse(dense, sparse, config, "건강검진"))[0] == "s"
    assert ids(fuse(dense, sparse, config, "health check"))[0] == "d"


@pytest.mark.parametrize("kwargs", [{"method": "max"}, {"dense_weight": 1.5}, {"korean_dense_weight": -0.1},
                                    {"rrf_k": 0}])
def test_bad_fusion_config_names_the_field(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInput) as err:
        FusionConfig(**kwargs)  # type: ignore[arg-type]
    assert err.value.field and err.value.field.startswith("fusion")


def test_bad_weights_are_rejected() -> None:
    with pytest.raises(InvalidInput):
        weighted([[hit("a", 1)], [hit("b", 1)]], [1.0])
    with pytest.raises(InvalidInput):
        rrf([[hit("a", 1)]], [-1.0])


def test_korean_analysis_strips_particles_and_endings() -> None:
    assert has_hangul("보험료") and not has_hangul("premium")
    terms = korean_terms("보험료를 납부하지 않으면 어떻게 되나요?")
    assert "보험료" in terms and "납부" in terms
    assert not any(t in ("를", "으면", "요", "?") for t in terms)
    assert lexical_text("The cells were analyzed in the studies") == "cell were analyzed studie".replace(
        "studie", light_stem("studies"))
    assert light_stem("studies") == "study" and light_stem("boxes") == "box" and light_stem("gas") == "gas"


def _ndcg10(ranked: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, c in enumerate(ranked[:10]) if c in relevant)
    return dcg / sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))


def test_feature_reranker_uses_exact_leg_scores() -> None:
    # "b" was only found by the sparse leg, so first-stage fusion gave it 0 on the dense leg.
    fused = weighted([[hit("a", 0.9), hit("c", 0.2)], [hit("c", 9.0), hit("b", 8.0)]], [0.5, 0.5])
    exact = {"dense": {"a": 0.9, "b": 0.85, "c": 0.2}, "sparse": {"a": 0.0, "b": 8.0, "c": 9.0}}
    context = RerankContext("q", (0.5, 0.5), lambda leg, cids: {c: exact[leg][c] for c in cids})
    reranked = FeatureReranker().rerank(fused, context)
    assert ids(reranked)[0] == "b"
    assert _ndcg10(ids(reranked), {"b"}) >= _ndcg10(ids(fused), {"b"})
    assert sorted(ids(reranked)) == sorted(ids(fused))
    assert NoRerank().rerank(fused, context) == fused
    one_leg = RerankContext("q", (1.0,), context.rescore, ("dense",))
    assert FeatureReranker().rerank(fused, one_leg) == fused


def test_reranker_registry() -> None:
    assert create_reranker("features").name == "features"
    assert create_reranker("none").name == "none"
    with pytest.raises(Exception, match="local model path"):
        create_reranker("cross-encoder")


def test_near_duplicates_and_threshold() -> None:
    text = "the annual premium is due on the first day of every month"
    hits = [hit("a", 0.9, text), hit("b", 0.8, text + "."), hit("c", 0.7, "a completely different passage here")]
    assert ids(drop_near_duplicates(hits, 0.9)) == ["a", "c"]
    assert ids(apply_threshold(hits, 0.75)) == ["a", "b"]
    assert apply_threshold(hits, None) == hits


def test_weighted_fusion_flips_a_distance_ranked_leg() -> None:
    # ranked best first but lower-is-better (Milvus Lite reports BM25 as a negative distance)
    distances = [hit("a", -3.0), hit("b", -2.0), hit("c", -1.0)]
    assert ids(weighted([distances], [1.0])) == ["a", "b", "c"]
    assert weighted([distances], [1.0])[0].score == pytest.approx(1.0)


def test_feature_reranker_treats_a_missing_bm25_score_as_zero() -> None:
    # Only "k" shares a term with the query; restricted BM25 returns just it. The others score 0, not "the min".
    hits = [hit("x", 0.9), hit("k", 0.8), hit("y", 0.7)]
    exact = {"dense": {"x": 0.35, "k": 0.31, "y": 0.28}, "sparse": {"k": 3.6}}
    context = RerankContext("q", (0.5, 0.5), lambda leg, cids: {c: exact[leg][c] for c in cids if c in exact[leg]})
    assert ids(FeatureReranker().rerank(hits, context))[0] == "k"
