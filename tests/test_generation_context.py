from __future__ import annotations

import pytest

from rag_ray.errors import InvalidInput
from rag_ray.generation.context import (
    CHUNK_OVERHEAD_TOKENS,
    INJECTION_MODES,
    ContextChunk,
    chunk_cost,
    fit_to_budget,
    interleave_order,
    render_context,
)
from rag_ray.generation.prompts import PromptEngineer, PromptRequest
from rag_ray.generation.textutil import estimate_tokens, truncate_to_tokens

SENTENCE = "Attention layers mix information across positions of the sequence. "


def chunk(i: int, score: float, sentences: int = 10) -> ContextChunk:
    return ContextChunk(id=f"c{i}", text=f"Chunk {i}. " + SENTENCE * sentences, score=score, source=f"doc{i}")


def test_token_estimate_latin_and_hangul() -> None:
    assert estimate_tokens("a" * 400) == 100  # ~4 chars / token
    assert estimate_tokens("가" * 150) == 100  # ~1.5 chars / token
    assert estimate_tokens("") == 0


def test_truncate_respects_budget_and_prefers_sentence_end() -> None:
    text = SENTENCE * 20
    cut = truncate_to_tokens(text, 50)
    assert estimate_tokens(cut) <= 50 and cut.endswith("…")
    assert cut.removesuffix(" …").endswith(".")
    assert truncate_to_tokens("short", 50) == "short"


def test_everything_fits_when_budget_allows() -> None:
    fitted = fit_to_budget([chunk(1, 0.5), chunk(2, 0.9)], 10_000)
    assert [u.chunk.id for u in fitted.used] == ["c2", "c1"]  # numbered by score
    assert [u.number for u in fitted.used] == [1, 2]
    assert not fitted.compression_applied


def test_lowest_scores_are_dropped_first() -> None:
    chunks = [chunk(1, 0.9), chunk(2, 0.3), chunk(3, 0.6)]
    budget = 2 * chunk_cost(chunks[0].text) + 10  # two whole chunks, not enough left to truncate a third
    fitted = fit_to_budget(chunks, budget)
    assert [u.chunk.id for u in fitted.used] == ["c1", "c3"]
    assert fitted.dropped_ids == ["c2"]
    assert fitted.final_tokens <= budget and fitted.compression_applied


def test_then_the_next_chunk_is_truncated_to_fill_the_budget() -> None:
    chunks = [chunk(1, 0.9), chunk(2, 0.8), chunk(3, 0.1)]
    budget = chunk_cost(chunks[0].text) + CHUNK_OVERHEAD_TOKENS + 80
    fitted = fit_to_budget(chunks, budget)
    assert [u.chunk.id for u in fitted.used] == ["c1", "c2"]
    assert fitted.used[1].truncated and len(fitted.used[1].text) < len(chunks[1].text)
    assert fitted.dropped_ids == ["c3"]
    assert fitted.final_tokens <= budget
    assert fitted.metadata()["truncated"] == ["c2"]


def test_duplicate_passages_are_dropped() -> None:
    a = chunk(1, 0.9)
    b = ContextChunk(id="dup", text=a.text.upper(), score=0.5)
    fitted = fit_to_budget([a, b], 10_000)
    assert [u.chunk.id for u in fitted.used] == ["c1"] and fitted.dropped_ids == ["dup"]


def test_interleave_puts_best_at_both_ends() -> None:
    assert interleave_order(6) == [0, 2, 4, 5, 3, 1]
    assert interleave_order(1) == [0]


@pytest.mark.parametrize("mode", sorted(INJECTION_MODES))
def test_every_mode_renders_every_number(mode: str) -> None:
    used = fit_to_budget([chunk(i, 1 - i / 10, sentences=1) for i in range(7)], 10_000).used
    block = render_context(used, mode)
    for n in range(1, 8):
        assert f"[{n}]" in block


def test_adaptive_mode_picks_by_shape() -> None:
    two = fit_to_budget([chunk(1, 0.9, 1), chunk(2, 0.8, 1)], 10_000).used
    assert render_context(two, "adaptive") == render_context(two, "prepend")
    four = fit_to_budget([chunk(i, 1 - i / 10, 1) for i in range(4)], 10_000).used
    assert render_context(four, "adaptive") == render_context(four, "structured_sections")
    seven = fit_to_budget([chunk(i, 1 - i / 10, 1) for i in range(7)], 10_000).used
    assert render_context(seven, "adaptive") == render_context(seven, "interleaved")


def test_unknown_mode_names_the_field() -> None:
    with pytest.raises(InvalidInput) as err:
        render_context([], "sideways")
    assert err.value.field == "context_injection"


def test_engineer_trims_context_to_the_model_window() -> None:
    chunks = [chunk(i, 1 - i / 10, sentences=40) for i in range(8)]
    prompt = PromptEngineer(context_window=2048).build(PromptRequest("What do attention layers do?", chunks),
                                                     "simple", max_tokens=512)
    meta = prompt.metadata
    assert meta["compression_applied"] and meta["contexts_dropped"] > 0
    assert meta["prompt_tokens_estimate"] + 512 <= 2048
    assert meta["optimized_length"] < meta["original_length"]
    assert prompt.context.used[0].chunk.id == "c0"
