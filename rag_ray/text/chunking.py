"""Sentence- and paragraph-aware character chunking.

Chunks are exact slices of the input: ``chunk_spans`` returns ``(start, end)`` offsets, every
character belongs to at least one span, consecutive spans overlap by at most ``overlap``
characters, and no span is longer than ``size``. A cut is placed, in order of preference, after a
paragraph break, after a sentence end, after a line break, after any whitespace, and only then at
an arbitrary position; cuts never fall inside a grapheme (combining marks, surrogate pairs, ZWJ
sequences, Hangul jamo sequences). Work per chunk is bounded by ``size``, so the total is linear
in the text length for a fixed size/overlap ratio.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from rag_ray.errors import InvalidInput

MIN_CHUNK_SIZE = 50

_PARAGRAPH = re.compile(r"\n[^\S\n]*\n\s*")
# English-style ends need following whitespace ("3.14", "e.g.x" are not ends); Korean endings
# (다. 요. 죠. 까? 니?) and CJK full stops end a sentence even when the next one follows without a space.
_SENTENCE = re.compile(r"(?:[.?!…]+[\"'”’)\]]*(?=\s)|(?<=[다요죠까니])[.?!]+|[。．！？｡]+)\s*")
_LINE = re.compile(r"\n\s*")
_SPACE = re.compile(r"\s+")
_CUT_LEVELS = (_PARAGRAPH, _SENTENCE, _LINE, _SPACE)
_WORD_START = re.compile(r"(?<=\s)\S")

_ZWJ = "\u200d"


def _is_hangul_leading(ch: str) -> bool:
    return "\u1100" <= ch <= "\u115f" or "\ua960" <= ch <= "\ua97f"


def _is_hangul_vowel_or_trailing(ch: str) -> bool:
    return "\u1160" <= ch <= "\u11ff" or "\ud7b0" <= ch <= "\ud7ff"


def _extends_previous(ch: str) -> bool:
    """True when ``ch`` belongs to the grapheme of the character before it."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Mc", "Me"):
        return True
    return (ch == _ZWJ or "\ufe00" <= ch <= "\ufe0f" or "\U0001f3fb" <= ch <= "\U0001f3ff"
            or "\udc00" <= ch <= "\udfff" or _is_hangul_vowel_or_trailing(ch))


def is_safe_cut(text: str, pos: int) -> bool:
    """May ``text`` be split between ``text[pos - 1]`` and ``text[pos]``?"""
    if pos <= 0 or pos >= len(text):
        return True
    prev, cur = text[pos - 1], text[pos]
    if _extends_previous(cur) or prev == _ZWJ or (prev == "\r" and cur == "\n"):
        return False
    # A leading jamo followed by another leading jamo or a syllable is one (old-Hangul) syllable.
    return not (_is_hangul_leading(prev) and (_is_hangul_leading(cur) or "\uac00" <= cur <= "\ud7a3"))


def validate_chunking(size: int, overlap: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < MIN_CHUNK_SIZE:
        raise InvalidInput(f"chunk size must be an integer >= {MIN_CHUNK_SIZE} characters, got {size!r}",
                           field="chunk_size")
    if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < 0 or overlap >= size:
        raise InvalidInput(f"chunk overlap must be an integer with 0 <= overlap < size ({size}), got {overlap!r}",
                           field="chunk_overlap")


def _boundary_cuts(pattern: re.Pattern[str], text: str, lo: int, hi: int) -> list[int]:
    """Cut positions (ends of boundary matches, clipped to ``hi``) in ``(lo, hi]``, ascending."""
    cuts = []
    # Start a little before ``lo`` so a boundary whose whitespace straddles ``lo`` is still seen whole.
    for match in pattern.finditer(text, max(lo - 16, 0), hi):
        cut = match.end()
        if cut > lo:
            cuts.append(cut)
    return cuts


def _choose_cut(text: str, start: int, size: int, overlap: int) -> int:
    hi = start + size
    lowest = start + overlap + 1  # guarantees the next chunk reaches past this one
    preferred = max(lowest, start + size // 2)  # do not give up half a chunk for a better boundary
    found: dict[int, list[int]] = {}
    for floor in (preferred, lowest):
        for level, pattern in enumerate(_CUT_LEVELS):
            if level not in found:
                found[level] = _boundary_cuts(pattern, text, lowest, hi)
            for cut in reversed(found[level]):
                if cut < floor:
                    break
                if is_safe_cut(text, cut):
                    return cut
    for cut in range(hi, lowest - 1, -1):  # no boundary at all: the last grapheme boundary
        if is_safe_cut(text, cut):
            return cut
    return hi  # one grapheme longer than a chunk: a chunk may never exceed size


def _next_start(text: str, start: int, cut: int, overlap: int) -> int:
    """Where the next chunk begins: the earliest clean boundary within the last ``overlap`` chars."""
    lo = max(cut - overlap, start + 1)
    if lo >= cut:
        return cut
    for pattern in (_PARAGRAPH, _SENTENCE):
        for match in pattern.finditer(text, max(lo - 4, 0), cut):
            if lo <= match.end() < cut and is_safe_cut(text, match.end()):
                return match.end()
    word = _WORD_START.search(text, lo, cut)
    while word is not None:
        if is_safe_cut(text, word.start()):
            return word.start()
        word = _WORD_START.search(text, word.start() + 1, cut)
    for pos in range(lo, cut):
        if is_safe_cut(text, pos):
            return pos
    return cut


def chunk_spans(text: str, size: int = 800, overlap: int = 100) -> list[tuple[int, int]]:
    """``(start, end)`` offsets of the chunks of ``text``; ``[]`` for empty or whitespace-only text."""
    validate_chunking(size, overlap)
    if not text or text.isspace():
        return []
    spans: list[tuple[int, int]] = []
    start, length = 0, len(text)
    while start + size < length:
        cut = _choose_cut(text, start, size, overlap)
        spans.append((start, cut))
        start = _next_start(text, start, cut, overlap)
    spans.append((start, length))
    return spans


def chunk_text(text: str, size: int = 800, overlap: int = 100) -> list[str]:
    """Split ``text`` into chunks of at most ``size`` characters overlapping by at most ``overlap``.

    Chunks that would hold only whitespace (possible only inside runs of whitespace longer than a
    chunk) are left out.
    """
    chunks = [text[start:end] for start, end in chunk_spans(text, size, overlap)]
    return [chunk for chunk in chunks if not chunk.isspace()]


@dataclass(frozen=True)
class Chunker:
    """A validated chunking configuration, cheap to pickle into Ray Data workers."""

    size: int = 800
    overlap: int = 100

    def __post_init__(self) -> None:
        validate_chunking(self.size, self.overlap)

    def split(self, text: str) -> list[str]:
        return chunk_text(text, self.size, self.overlap)

    def spans(self, text: str) -> list[tuple[int, int]]:
        return chunk_spans(text, self.size, self.overlap)
