from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from rag_ray.generation.formats import (
    FORMATTERS,
    HTML_TAGS,
    NO_SUPPORT_MESSAGE,
    UNVERIFIED_MARK,
    QualityFilters,
    ResponseDocument,
    apply_quality_filters,
    build_citations,
    fact_check,
    parse_blocks,
    remove_invalid_citations,
    render,
)
from tests.test_generation_fixtures import GROUNDED, HALLUCINATED, HALLUCINATION, QUERY, evaluator, used

ANSWER = f"""# Overview
{GROUNDED}

## Key points
- **Self-attention** weighs every position [2].
- Uses `softmax` over scores [2].
1. First step
2. Second step

<script>alert("x")</script> <img src=x onerror=alert(1)> & more [1]."""


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def doc(text: str = ANSWER) -> ResponseDocument:
    return ResponseDocument(text, build_citations(text, used()), [HALLUCINATION])


def test_citations_follow_first_use_and_ignore_unknown_numbers() -> None:
    citations = build_citations("b [2]. a [1][2]. c [9].", used())
    assert [(c.number, c.chunk_id, c.source) for c in citations] == [(2, "c1", "Doc 1"), (1, "c0", "Doc 0")]


def test_remove_invalid_citations() -> None:
    assert remove_invalid_citations("x [1, 9]. y [9]. z [2].", {1, 2}) == "x [1]. y. z [2]."


def test_html_is_built_from_a_whitelist_and_escapes_raw_html() -> None:
    out = render(doc(), "html").content
    parser = TagCollector()
    parser.feed(out)
    parser.close()
    assert set(parser.tags) <= HTML_TAGS
    assert {"h3", "h4", "p", "ul", "ol", "li", "strong", "code", "sup"} <= set(parser.tags)
    assert parser.attrs == [("class", "answer"), ("class", "sources")]
    assert "script" not in parser.tags and "img" not in parser.tags
    assert '<script>alert("x")</script>' in "".join(parser.text)  # shown as text, never run


def test_json_parses_and_carries_citations() -> None:
    data = json.loads(render(doc(), "json").content)
    assert data["answer"] == ANSWER
    assert [c["number"] for c in data["citations"]] == [1, 2]
    assert data["unsupported_sentences"] == [HALLUCINATION]


def test_structured_has_summary_details_sources() -> None:
    out = render(doc(), "structured")
    assert out.data is not None
    assert out.data["summary"].startswith("The Transformer architecture was introduced in 2017 [1].")
    assert "Key points" not in out.data["summary"] and "softmax" in out.data["details"]
    assert [s["chunk_id"] for s in out.data["sources"]] == ["c0", "c1"]
    json.dumps(out.data)
    assert "## Summary" in out.content and "## Sources" in out.content


def test_plain_text_drops_markup() -> None:
    out = render(doc(), "plain_text").content
    assert "**" not in out and "`" not in out and "#" not in out
    assert "- Self-attention weighs every position [2]." in out and "Sources:" in out


def test_markdown_appends_sources() -> None:
    out = render(doc(), "markdown").content
    assert out.startswith("# Overview") and "- [1] Doc 0" in out


@pytest.mark.parametrize("fmt", sorted(FORMATTERS))
def test_every_format_handles_an_empty_answer(fmt: str) -> None:
    assert render(ResponseDocument(""), fmt).format == fmt


def test_blocks() -> None:
    kinds = [(b.kind, len(b.lines)) for b in parse_blocks(ANSWER)]
    assert kinds == [("heading", 1), ("paragraph", 1), ("heading", 1), ("list", 2), ("list", 2), ("paragraph", 1)]


def test_fact_check_drops_the_unsupported_sentence_only() -> None:
    text = f"Intro line.\n- {HALLUCINATION}\n- Kept item [1].\n{HALLUCINATED}"
    new_text, hits = fact_check(text, [HALLUCINATION], "drop")
    assert HALLUCINATION not in new_text and len(hits) == 2
    assert "- Kept item [1]." in new_text and "Self-attention computes weights" in new_text
    flagged, _ = fact_check(text, [HALLUCINATION], "flag")
    assert f"{HALLUCINATION}{UNVERIFIED_MARK}" in flagged


def test_quality_filters_drop_unsupported_sentences_and_warn() -> None:
    evaluation = evaluator().evaluate(QUERY, HALLUCINATED, used())
    outcome = apply_quality_filters(HALLUCINATED, evaluation, QualityFilters(enable_fact_checking=True))
    assert HALLUCINATION not in outcome.text and "Self-attention computes weights" in outcome.text
    assert outcome.removed_sentences and outcome.passed
    strict = apply_quality_filters(HALLUCINATED, evaluation, QualityFilters(min_relevance=0.99))
    assert not strict.passed and "relevance" in strict.warnings[0] and strict.text == HALLUCINATED


def test_nothing_supported_leaves_an_honest_message() -> None:
    evaluation = evaluator().evaluate(QUERY, HALLUCINATION, used())
    outcome = apply_quality_filters(HALLUCINATION, evaluation, QualityFilters(enable_fact_checking=True))
    assert outcome.text == NO_SUPPORT_MESSAGE and not outcome.passed
