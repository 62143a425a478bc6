"""Small, dependency-free text helpers shared by prompts, evaluation, consensus and formatting.

Tokenisation is deliberately cheap: ``[^\\W_]+`` words (Latin, digits and Hangul alike), lower-cased, with a
light Korean particle/ending stripper so ``딥러닝은`` and ``딥러닝과`` both become ``딥러닝``. For real
morphemes pass ``kiwi_tokenizer()`` wherever a ``Tokenizer`` is accepted (kiwipiepy loads in ~1 s).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable

Tokenizer = Callable[[str], list[str]]

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_CITATION = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?。？！])\s+")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
_HEADING = re.compile(r"^\s*#{1,6}\s+")

# Longest first: particles and common verb endings, stripped once when at least 2 syllables remain.
_KO_SUFFIXES = tuple(sorted((
    "해주세요", "합니다", "됩니다", "입니다", "으로서", "으로써", "에서는", "에서의", "에게서", "로부터",
    "부터", "까지", "보다", "처럼", "에서", "에게", "으로", "이다", "이며", "이고", "하는", "한다", "했다", "하며",
    "하고", "하여", "해서", "된다", "되는", "되어", "라는", "이라는", "로서", "로써", "와는", "과는", "에는",
    "은", "는", "이", "가", "을", "를", "의", "에", "와", "과", "도", "만", "로", "며",
), key=len, reverse=True))

STOPWORDS = frozenset({
    # English
    "a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "for", "with", "by", "at", "from", "as", "is",
    "are", "was", "were", "be", "been", "it", "its", "this", "that", "these", "those", "what", "which", "who",
    "how", "why", "when", "where", "do", "does", "did", "can", "could", "should", "would", "will", "please",
    "explain", "describe", "tell", "me", "about", "i", "you", "we", "they", "he", "she", "not", "no", "so",
    "than", "then", "there", "their", "has", "have", "had", "also", "into", "more", "most", "such", "some",
    # Korean
    "그리고", "또한", "그러나", "하지만", "그", "이", "저", "것", "수", "등", "및", "대한", "대해", "대해서",
    "있는", "있다", "있습니다", "없는", "설명", "알려주세요", "무엇", "무엇인가요", "어떻게", "왜", "좀",
    "주세요", "해주세요", "관련", "위한", "통해", "같은", "에", "의",
})

NEGATIONS = frozenset({"not", "no", "never", "none", "cannot", "isn", "aren", "doesn", "don", "didn", "won",
                       "않", "않는다", "않습니다", "아니다", "아닙니다", "없다", "없습니다", "못한다"})


def normalize_token(token: str) -> str:
    """Strip a Korean particle/ending, or an English plural ``s`` (``transformers`` → ``transformer``)."""
    if not _HANGUL.match(token[-1:]):
        return token[:-1] if len(token) > 3 and token.endswith("s") and not token.endswith("ss") else token
    for suffix in _KO_SUFFIXES:
        if token.endswith(suffix) and len(token) - len(suffix) >= 2:
            return token[: -len(suffix)]
    return token


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens, Korean particles and English plurals stripped."""
    return [normalize_token(t) for t in _WORD.findall(text.lower())]


def content_terms(text: str, tokenizer: Tokenizer = tokenize) -> list[str]:
    """Tokens minus stopwords and one-character Latin noise: the words that carry meaning."""
    return [t for t in tokenizer(text) if t not in STOPWORDS and (len(t) > 1 or t.isdigit() or _HANGUL.match(t))]


def has_negation(text: str) -> bool:
    lowered = text.lower()
    return any(t in NEGATIONS for t in _WORD.findall(lowered)) or "않" in lowered or "n't" in lowered


def strip_citations(text: str) -> str:
    return _CITATION.sub("", text).strip()


def citation_numbers(text: str) -> list[int]:
    return [int(n) for group in _CITATION.findall(text) for n in re.split(r"\s*,\s*", group)]


def strip_markup(line: str) -> str:
    line = _HEADING.sub("", _LIST_MARKER.sub("", line))
    return line.replace("**", "").replace("__", "").replace("`", "").strip()


def is_heading(line: str) -> bool:
    return bool(_HEADING.match(line)) or (line.strip().endswith(":") and len(line.split()) <= 6)


def split_sentences(text: str, *, include_headings: bool = False) -> list[str]:
    """Sentences of an answer, markdown list markers and headings removed (headings skipped by default)."""
    sentences: list[str] = []
    for line in text.splitlines():
        if not line.strip() or (is_heading(line) and not include_headings):
            continue
        sentences.extend(s.strip() for s in _SENTENCE_END.split(strip_markup(line)) if s.strip())
    return sentences


def count_hangul(text: str) -> int:
    return len(_HANGUL.findall(text))


def estimate_tokens(text: str) -> int:
    """Approximate token count without a tokenizer.

    Latin text averages ~4 characters per token (spaces included) in BPE vocabularies; Hangul averages
    ~1.5 characters per token (a syllable is often 1-2 byte-level tokens). Good to ~±25 %, so callers keep
    a safety margin instead of trusting it to the token.
    """
    hangul = count_hangul(text)
    return math.ceil(hangul / 1.5 + (len(text) - hangul) / 4)


def truncate_to_tokens(text: str, max_tokens: int, *, ellipsis: str = " …",
                       estimate: Callable[[str], int] = estimate_tokens) -> str:
    """Longest prefix within ``max_tokens`` (by ``estimate``, which must be monotone in the prefix length), cut back
    to a sentence end when that keeps ≥ half."""
    if estimate(text) <= max_tokens:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate(text[:mid]) + estimate(ellipsis) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    prefix = text[:lo]
    ends = [m.start() for m in _SENTENCE_END.finditer(prefix)]
    if ends and ends[-1] >= lo // 2:
        prefix = prefix[: ends[-1]]
    return prefix.rstrip() + ellipsis if prefix else ""


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


def containment(part: Iterable[str], whole: Iterable[str]) -> float:
    """Share of ``part``'s distinct terms found in ``whole``."""
    sp = set(part)
    return len(sp & set(whole)) / len(sp) if sp else 1.0


def kiwi_tokenizer() -> Tokenizer:  # pragma: no cover - optional, loads a model
    """Morpheme tokenizer (nouns, verb/adjective stems, foreign words, numbers) backed by kiwipiepy."""
    from kiwipiepy import Kiwi

    kiwi = Kiwi()
    keep = ("NN", "VV", "VA", "SL", "SN", "XR")

    def _tokenize(text: str) -> list[str]:
        return [tok.form.lower() for tok in kiwi.tokenize(text) if tok.tag.startswith(keep)]

    return _tokenize
