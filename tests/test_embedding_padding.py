"""Length-aware batches: every text once, batches no larger than asked, the cheapest split under the cost model,
and the same vectors as the model gives each text alone."""

from __future__ import annotations

import random

import numpy as np
import pytest

from rag_ray.embedding.padding import length_groups


def cost(groups: list[list[int]], lengths: list[int], call_cost: float) -> float:
    return sum(call_cost + len(g) * max(lengths[i] for i in g) for g in groups)


def set_partitions(items: list[int]):  # type: ignore[no-untyped-def]
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in set_partitions(rest):
        yield [[first], *partition]
        for k in range(len(partition)):
            yield [*partition[:k], [first, *partition[k]], *partition[k + 1:]]


def test_every_text_once_in_batches_no_larger_than_asked() -> None:
    rng = random.Random(7)
    lengths = [rng.randint(3, 300) for _ in range(200)]
    groups = length_groups(lengths, call_cost=40, max_size=16)
    assert sorted(i for g in groups for i in g) == list(range(200))
    assert max(len(g) for g in groups) <= 16


@pytest.mark.parametrize("call_cost", [0.0, 12.0, 60.0, 1000.0])
def test_the_split_is_the_cheapest_of_all_partitions(call_cost: float) -> None:
    rng = random.Random(int(call_cost))
    for _ in range(20):
        lengths = [rng.choice([5, 9, 12, 20, 21, 40, 79]) for _ in range(rng.randint(1, 7))]
        best = min(cost(p, lengths, call_cost) for p in set_partitions(list(range(len(lengths))))
                   if all(len(g) <= 4 for g in p))
        assert cost(length_groups(lengths, call_cost=call_cost, max_size=4), lengths, call_cost) == pytest.approx(best)


def test_similar_lengths_stay_together_and_an_outlier_goes_alone() -> None:
    lengths = [20, 22, 19, 21, 120, 23, 18]
    assert length_groups(lengths, call_cost=30, max_size=16) == [[6, 2, 0, 3, 1, 5], [4]]
    assert length_groups(lengths, call_cost=10_000, max_size=16) == [[6, 2, 0, 3, 1, 5, 4]]


def test_no_texts_no_batches() -> None:
    assert length_groups([], call_cost=10, max_size=4) == []


def test_a_mixed_call_gives_each_text_the_vector_it_gets_alone(local_embedder) -> None:  # type: ignore[no-untyped-def]
    texts = ["short", "a somewhat longer sentence about proteins and cells",
             "x " * 200, "another short one", "mid-length text on vaccines and the immune response in mice"]
    together = local_embedder.embed(texts)
    alone = np.vstack([local_embedder.embed([t]) for t in texts])
    assert together.shape == (5, local_embedder.dimension)
    np.testing.assert_allclose(together, alone, atol=2e-5)


def test_token_lengths_are_each_texts_own_after_the_model_padded_a_batch(local_embedder) -> None:  # type: ignore[no-untyped-def]
    """The Rust tokenizer keeps the padding of the model's last batch; the lengths the split uses must not."""
    texts = ["short", "a much longer text with many more words than the first one has"]
    local_embedder.embed(["pad " * 100, "x"])
    short, long = local_embedder._token_lengths(texts)
    assert 2 < short < long < 30
