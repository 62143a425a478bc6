from __future__ import annotations

import pytest

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.errors import InvalidInput
from rag_ray.generation.consensus import SELECTORS, analyse, claim_overlap, claims, cluster, select
from tests.test_generation_fixtures import GROUNDED

AGREEING = [
    GROUNDED,
    "Self-attention computes weights between all positions of the input sequence [2]. The Transformer architecture "
    "was introduced in 2017 [1]. Every position uses query, key and value vectors [2].",
    "Introduced in 2017, the Transformer architecture relies on self-attention [1]. Self-attention computes weights "
    "between all positions of the sequence with query, key and value vectors [2].",
]
OUTLIER = "Transformers are electrical devices that change voltage levels between circuits using magnetic coils."
ANSWERS = [AGREEING[0], OUTLIER, AGREEING[1], AGREEING[2]]  # the outlier is not last on purpose


def test_three_agreeing_and_one_outlier() -> None:
    result = analyse(ANSWERS, FakeEmbedder(), threshold=0.5)
    assert sorted(result.majority) == [0, 2, 3]
    assert [1] in result.clusters
    central = result.centrality()
    assert min(range(4), key=central.__getitem__) == 1
    agreeing_only = analyse(AGREEING, FakeEmbedder(), threshold=0.5)
    assert agreeing_only.score > result.score
    assert agreeing_only.reached


def test_selection_methods_order_as_expected() -> None:
    result = analyse(ANSWERS, FakeEmbedder(), threshold=0.5)
    qualities = [0.70, 0.75, 0.68, 0.66]  # the outlier scores a little higher on its own
    assert select("best_weighted_score", qualities, result) == 1
    assert select("majority_cluster", qualities, result) == 0
    assert select("consensus_weighted", qualities, result) == 0


def test_required_selectors_are_registered() -> None:
    assert {"best_weighted_score", "majority_cluster", "consensus_weighted"} <= set(SELECTORS)
    with pytest.raises(InvalidInput) as err:
        select("coin_flip", [1.0], analyse(["a b c"], FakeEmbedder()))
    assert err.value.field == "selection_method"


def test_single_answer_is_its_own_consensus() -> None:
    result = analyse([GROUNDED], FakeEmbedder())
    assert result.score == 1.0 and result.majority == [0] and result.centrality() == [1.0]


def test_claim_overlap_is_symmetric_and_bounded() -> None:
    a, b = claims(AGREEING[0]), claims(OUTLIER)
    assert claim_overlap(a, a) == 1.0
    assert claim_overlap(a, b) == claim_overlap(b, a) < 0.5


def test_cluster_is_single_link() -> None:
    import numpy as np

    m = np.array([[1, 0.8, 0.1], [0.8, 1, 0.75], [0.1, 0.75, 1]])
    assert cluster(m, 0.7) == [[0, 1, 2]]
    assert cluster(m, 0.78) == [[0, 1], [2]]
