"""Citations with spans: each ``[n]`` marker of an answer mapped to the passage ``n`` of the prompt — its chunk id,
document id and source — and to the character span of the sentence in that chunk's text that best supports the
answer sentence carrying the marker (most shared words; ties: the earlier sentence).

Markers that point at no passage in the prompt are removed from the text and reported (``CitedAnswer.dropped``).
Passages only ever come from the hits retrieved under the caller's access filter, so a citation can name nothing
the caller may not read; spans index the chunk text as the caller received it (masked where the policy says so).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from rag_ray.generation.textutil import content_terms
from rag_ray.types import SearchHit

_MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_MARKER_WITH_SPACE = re.compile(r"(\s?)\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_REFERENCE = re.compile(r"^(?:[-*]\s+)?\[(\d{1,3})\]\s+(.+)$")
_SENTENCE = re.compile(r"[^.!?。？！\n]+(?:[.!?。？！]+|\n|$)")


@dataclass(frozen=True)
class Passage:
    """Passage ``number`` of the prompt: the chunk as the caller received it."""

    number: int
    chunk_id: str
    doc_id: str
    source: str
    text: str


@dataclass(frozen=True)
class Citation:
    """Marker ``[number]`` (at ``marker_offset`` in the answer) → ``text[start:end]`` of chunk ``chunk_id``."""

    number: int
    chunk_id: str
    doc_id: str
    source: str
    start: int
    end: int
    quote: str
    overlap: float  # share of the answer sentence's words found in the quoted sentence
    marker_offset: int


@dataclass(frozen=True)
class CitedAnswer:
    text: str  # the answer without the markers that point at nothing
    citations: list[Citation]
    dropped: list[int]  # marker numbers that pointed at no passage, in order of first appearance


def passages_for(numbered: Sequence[tuple[int, str]], hits: Sequence[SearchHit]) -> list[Passage]:
    """Passage ``number`` → chunk id pairs of a prompt, with each chunk as retrieved (full text, not the prompt's
    possibly trimmed copy); pairs whose chunk was not retrieved are left out (they cannot be cited)."""
    by_id = {h.chunk_id: h for h in hits}
    return [Passage(number, hit.chunk_id, hit.doc_id, hit.source_uri, hit.text)
            for number, chunk_id in numbered if (hit := by_id.get(chunk_id)) is not None]


def cite(answer: str, passages: Sequence[Passage], *, strip: bool = True) -> CitedAnswer:
    """Drop the markers that point at nothing, then map every remaining marker to its supporting span.
    ``strip=False`` (text already sent, e.g. streamed): report those markers but leave the text as it is."""
    by_number = {p.number: p for p in passages}
    dropped = list(dict.fromkeys(n for n in _marker_numbers(answer) if n not in by_number))
    text = _strip_invalid(answer, set(by_number)) if dropped and strip else answer
    citations: list[Citation] = []
    seen: set[tuple[int, int, int]] = set()
    for start, sentence in _claims(text, by_number):
        claim = _MARKER.sub(" ", sentence)
        for marker in _MARKER.finditer(sentence):
            for number in (n for n in _numbers(marker.group(1)) if n in by_number):
                citation = _support(by_number[number], claim, start + marker.start())
                key = (number, citation.start, citation.end)
                if key not in seen:
                    seen.add(key)
                    citations.append(citation)
    return CitedAnswer(text, citations, dropped)


def _claims(text: str, by_number: dict[int, Passage]) -> list[tuple[int, str]]:
    """(offset, sentence) of the answer's sentences, without the lines of a "Sources" list."""
    out, offset = [], 0
    for line in text.splitlines(keepends=True):
        if not _is_reference_entry(line, by_number):
            out += [(offset + m.start(), m.group()) for m in _SENTENCE.finditer(line)]
        offset += len(line)
    return out


def _is_reference_entry(line: str, by_number: dict[int, Passage]) -> bool:
    """``[n] <source of n>`` (maybe a list item): a line of a "Sources" list, not a claim."""
    entry = _REFERENCE.match(line.strip())
    if entry is None or int(entry.group(1)) not in by_number:
        return False
    passage, rest = by_number[int(entry.group(1))], entry.group(2).strip()
    return rest in (passage.source, passage.chunk_id) or " " not in rest


def _support(passage: Passage, claim: str, marker_offset: int) -> Citation:
    wanted = _words(claim)
    best: tuple[float, int, int] = (-1.0, 0, len(passage.text))
    for match in _SENTENCE.finditer(passage.text):
        start, end = _trimmed(passage.text, match.start(), match.end())
        if start >= end:
            continue
        overlap = len(wanted & _words(passage.text[start:end])) / max(1, len(wanted))
        if overlap > best[0]:
            best = (overlap, start, end)
    overlap, start, end = best
    return Citation(passage.number, passage.chunk_id, passage.doc_id, passage.source, start, end,
                    passage.text[start:end], round(max(overlap, 0.0), 4), marker_offset)


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _words(text: str) -> set[str]:
    return set(content_terms(text))


def _numbers(group: str) -> list[int]:
    return [int(n) for n in re.split(r"\s*,\s*", group)]


def _marker_numbers(text: str) -> list[int]:
    return [n for m in _MARKER.finditer(text) for n in _numbers(m.group(1))]


def _strip_invalid(text: str, valid: set[int]) -> str:
    def keep(match: re.Match[str]) -> str:
        numbers = [str(n) for n in _numbers(match.group(2)) if n in valid]
        return f"{match.group(1)}[{', '.join(numbers)}]" if numbers else ""

    return _MARKER_WITH_SPACE.sub(keep, text)


# ---- the one wire shape of a citation: /query, /generate/rag, /v1 (model rag) ----
class SpanOut(BaseModel):
    start: int
    end: int


class CitationOut(BaseModel):
    """``[number]`` at ``marker_offset`` in the answer cites ``chunk_text[span.start:span.end]`` (= ``quote``) of
    chunk ``chunk_id`` of document ``doc_id``."""

    number: int
    chunk_id: str
    doc_id: str
    source: str
    span: SpanOut
    quote: str
    overlap: float
    marker_offset: int

    @classmethod
    def of(cls, c: Citation) -> CitationOut:
        return cls(number=c.number, chunk_id=c.chunk_id, doc_id=c.doc_id, source=c.source,
                   span=SpanOut(start=c.start, end=c.end), quote=c.quote, overlap=c.overlap,
                   marker_offset=c.marker_offset)


class CitationsOut(BaseModel):
    citations: list[CitationOut]
    dropped_markers: list[int]

    @classmethod
    def of(cls, cited: CitedAnswer) -> CitationsOut:
        return cls(citations=[CitationOut.of(c) for c in cited.citations], dropped_markers=cited.dropped)
