"""Post-processing: quality filters (fact checking) and output formats (registry ``FORMATTERS``).

Formats: ``plain_text``, ``markdown``, ``html``, ``json``, ``structured``. HTML is built, never passed through:
every piece of answer text is escaped first, then the few tags we generate ourselves from markdown-ish structure
(headings, paragraphs, lists, ``**bold**``, `` `code` ``, ``[n]`` citations) are added — see ``HTML_TAGS``.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rag_ray.errors import InvalidInput
from rag_ray.generation.context import UsedChunk
from rag_ray.generation.evaluation import Evaluation
from rag_ray.generation.textutil import citation_numbers, split_sentences, strip_citations, strip_markup

HTML_TAGS = frozenset({"div", "section", "h3", "h4", "p", "ul", "ol", "li", "strong", "code", "sup"})
NO_SUPPORT_MESSAGE = "The retrieved documents do not support an answer to this question."
UNVERIFIED_MARK = " (unverified)"

_LIST_ITEM = re.compile(r"^\s*(?:([-*+•])|(\d+)[.)])\s+(.*)$")
_HEADING = re.compile(r"^\s*(#{1,6})\s+(.*)$")
_CITE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_CITE_WITH_SPACE = re.compile(r"([ \t]*)\[(\d+(?:\s*,\s*\d+)*)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?。？！])\s+")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


@dataclass
class Citation:
    number: int
    chunk_id: str
    source: str
    snippet: str


def build_citations(text: str, used: Sequence[UsedChunk], snippet_chars: int = 200) -> list[Citation]:
    """Citations for the ``[n]`` markers in ``text`` that point at a passage in the prompt, in order of use."""
    by_number = {u.number: u for u in used}
    out: list[Citation] = []
    for n in dict.fromkeys(citation_numbers(text)):
        if n in by_number:
            u = by_number[n]
            out.append(Citation(n, u.chunk.id, u.chunk.source, u.text[:snippet_chars]))
    return out


def remove_invalid_citations(text: str, valid: set[int]) -> str:
    def keep(match: re.Match[str]) -> str:
        numbers = [n for n in re.split(r"\s*,\s*", match.group(2)) if int(n) in valid]
        return f"{match.group(1)}[{', '.join(numbers)}]" if numbers else ""

    return _CITE_WITH_SPACE.sub(keep, text)


def tidy(text: str) -> str:
    lines = [re.sub(r"[ \t]+", " ", line).rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# ---- quality filters ----------------------------------------------------------------------------------------
FactCheckAction = Literal["drop", "flag"]


@dataclass
class QualityFilters:
    min_relevance: float = 0.0
    min_completeness: float = 0.0
    min_accuracy: float = 0.0
    enable_fact_checking: bool = False
    fact_check_action: FactCheckAction = "drop"


@dataclass
class FilterOutcome:
    text: str
    passed: bool
    warnings: list[str] = field(default_factory=list)
    removed_sentences: list[str] = field(default_factory=list)
    flagged_sentences: list[str] = field(default_factory=list)


def _norm(sentence: str) -> str:
    return " ".join(strip_citations(strip_markup(sentence)).split()).lower()


def _filter_line(line: str, unsupported: set[str], action: FactCheckAction) -> tuple[str, list[str]]:
    match = re.match(r"^(\s*(?:[-*+•]|\d+[.)]|#{1,6})\s+)?(.*)$", line)
    assert match is not None
    prefix, body = match.group(1) or "", match.group(2)
    kept, hit = [], []
    for sentence in _SENTENCE_END.split(body):
        if _norm(sentence) in unsupported:
            hit.append(sentence)
            if action == "flag":
                kept.append(sentence + UNVERIFIED_MARK)
        else:
            kept.append(sentence)
    body = " ".join(s for s in kept if s.strip())
    return (prefix + body if body.strip() else ""), hit


def fact_check(text: str, unsupported_sentences: Sequence[str], action: FactCheckAction = "drop"
               ) -> tuple[str, list[str]]:
    """Drop (or mark) the sentences the evaluator found unsupported; returns the new text and what matched."""
    unsupported = {_norm(s) for s in unsupported_sentences}
    if not unsupported:
        return text, []
    lines, hits = [], []
    for line in text.splitlines():
        new_line, hit = _filter_line(line, unsupported, action)
        hits += hit
        if new_line or not line.strip():
            lines.append(new_line)
    return tidy("\n".join(lines)), hits


def apply_quality_filters(text: str, evaluation: Evaluation, filters: QualityFilters) -> FilterOutcome:
    warnings = [f"{metric} {evaluation.score(metric):.2f} is below the minimum {minimum:.2f}"
                for metric, minimum in (("relevance", filters.min_relevance),
                                        ("completeness", filters.min_completeness),
                                        ("accuracy", filters.min_accuracy))
                if minimum > 0 and metric in evaluation.scores and evaluation.scores[metric].confidence > 0
                and evaluation.score(metric) < minimum]
    outcome = FilterOutcome(text, passed=not warnings, warnings=warnings)
    if filters.enable_fact_checking and evaluation.unsupported_sentences:
        new_text, hits = fact_check(text, evaluation.unsupported_sentences, filters.fact_check_action)
        if filters.fact_check_action == "drop":
            outcome.removed_sentences = hits
        else:
            outcome.flagged_sentences = hits
        outcome.warnings.append(f"{len(hits)} unsupported sentence(s) {filters.fact_check_action}ped")
        if not split_sentences(new_text):
            new_text = NO_SUPPORT_MESSAGE
            outcome.passed = False
        outcome.text = new_text
    return outcome


# ---- markdown-ish blocks -----------------------------------------------------------------------------------
@dataclass
class Block:
    kind: Literal["heading", "paragraph", "list"]
    lines: list[str]
    ordered: bool = False
    level: int = 3


def parse_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    for raw in text.splitlines():
        heading, item = _HEADING.match(raw), _LIST_ITEM.match(raw)
        last = blocks[-1] if blocks else None
        if not raw.strip():
            if last and last.lines:
                blocks.append(Block("paragraph", []))  # a blank line ends the block
        elif heading:
            blocks.append(Block("heading", [heading.group(2).strip()], level=min(4, 2 + len(heading.group(1)))))
        elif item:
            ordered = item.group(2) is not None
            if last and last.kind == "list" and last.ordered == ordered:
                last.lines.append(item.group(3).strip())
            else:
                blocks.append(Block("list", [item.group(3).strip()], ordered=ordered))
        elif last and last.kind == "paragraph":
            last.lines.append(raw.strip())
        else:
            blocks.append(Block("paragraph", [raw.strip()]))
    return [b for b in blocks if b.lines]


# ---- formatters ---------------------------------------------------------------------------------------------
@dataclass
class ResponseDocument:
    text: str
    citations: list[Citation] = field(default_factory=list)
    unsupported_sentences: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class FormattedOutput:
    format: str
    content: str
    data: dict[str, Any] | None = None


Formatter = Callable[[ResponseDocument], FormattedOutput]
FORMATTERS: dict[str, Formatter] = {}


def formatter(name: str) -> Callable[[Formatter], Formatter]:
    def decorator(fn: Formatter) -> Formatter:
        FORMATTERS[name] = fn
        return fn

    return decorator


def _source_line(c: Citation) -> str:
    return f"[{c.number}] {c.source or c.chunk_id}"


@formatter("plain_text")
def format_plain(doc: ResponseDocument) -> FormattedOutput:
    lines = []
    for block in parse_blocks(doc.text):
        if block.kind == "list":
            lines += [f"{i}. {strip_markup(x)}" if block.ordered else f"- {strip_markup(x)}"
                      for i, x in enumerate(block.lines, start=1)]
        else:
            lines.append(" ".join(strip_markup(x) for x in block.lines))
        lines.append("")
    if doc.citations:
        lines += ["Sources:", *(_source_line(c) for c in doc.citations)]
    return FormattedOutput("plain_text", "\n".join(lines).strip())


@formatter("markdown")
def format_markdown(doc: ResponseDocument) -> FormattedOutput:
    content = doc.text
    if doc.citations:
        content += "\n\n**Sources**\n\n" + "\n".join(f"- {_source_line(c)}" for c in doc.citations)
    return FormattedOutput("markdown", content.strip())


def inline_html(text: str) -> str:
    """Escape everything, then add our own inline tags (bold, code, citation superscripts)."""
    out = html.escape(text, quote=True)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    out = _CODE.sub(r"<code>\1</code>", out)
    return _CITE.sub(r"<sup>[\1]</sup>", out)


def _block_html(block: Block) -> str:
    if block.kind == "heading":
        return f"<h{block.level}>{inline_html(block.lines[0])}</h{block.level}>"
    if block.kind == "list":
        tag = "ol" if block.ordered else "ul"
        return f"<{tag}>" + "".join(f"<li>{inline_html(x)}</li>" for x in block.lines) + f"</{tag}>"
    return f"<p>{inline_html(' '.join(block.lines))}</p>"


@formatter("html")
def format_html(doc: ResponseDocument) -> FormattedOutput:
    parts = ['<div class="answer">', *(_block_html(b) for b in parse_blocks(doc.text)), "</div>"]
    if doc.citations:
        items = "".join(f"<li>{inline_html(_source_line(c))}</li>" for c in doc.citations)
        parts += ['<section class="sources"><h4>Sources</h4>', f"<ul>{items}</ul>", "</section>"]
    return FormattedOutput("html", "\n".join(parts))


def split_summary(text: str, max_sentences: int = 2) -> tuple[str, str]:
    """First paragraph's first sentences as the summary; everything else as the details."""
    blocks = [b for b in parse_blocks(text) if b.kind != "heading"]
    if not blocks:
        return "", ""
    first = " ".join(blocks[0].lines) if blocks[0].kind == "paragraph" else ""
    sentences = _SENTENCE_END.split(first) if first else []
    summary = " ".join(sentences[:max_sentences])
    rest = [" ".join(sentences[max_sentences:])] if len(sentences) > max_sentences else []
    for block in blocks[1:] if first else blocks:
        rest.append("\n".join(f"- {x}" for x in block.lines) if block.kind == "list" else " ".join(block.lines))
    return summary, "\n\n".join(r for r in rest if r.strip())


def _payload(doc: ResponseDocument) -> dict[str, Any]:
    return {"citations": [asdict(c) for c in doc.citations], "unsupported_sentences": doc.unsupported_sentences}


@formatter("json")
def format_json(doc: ResponseDocument) -> FormattedOutput:
    data = {"answer": doc.text, **_payload(doc), **({"metadata": doc.metadata} if doc.metadata else {})}
    return FormattedOutput("json", json.dumps(data, ensure_ascii=False), data)


@formatter("structured")
def format_structured(doc: ResponseDocument) -> FormattedOutput:
    summary, details = split_summary(doc.text)
    data = {"summary": summary, "details": details, "sources": [asdict(c) for c in doc.citations],
            "unsupported_sentences": doc.unsupported_sentences}
    content = f"## Summary\n{summary}\n\n## Details\n{details or '-'}"
    if doc.citations:
        content += "\n\n## Sources\n" + "\n".join(f"- {_source_line(c)}" for c in doc.citations)
    return FormattedOutput("structured", content, data)


def render(doc: ResponseDocument, fmt: str) -> FormattedOutput:
    try:
        fn = FORMATTERS[fmt]
    except KeyError:
        raise InvalidInput(f"unknown response format {fmt!r} (known: {', '.join(sorted(FORMATTERS))})",
                           field="response_format") from None
    return fn(doc)
