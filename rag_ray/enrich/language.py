"""Language labels for chunks: ``ko``, ``en``, ``mixed`` (Korean + Latin), other ISO 639-1 codes, or ``unknown``.

Fast path first: count letters per Unicode script with precompiled regexes. Hangul decides Korean and
Korean/English mixes; scripts used by one language (kana, Thai, Greek, ...) decide directly; Latin text that
is full of English function words is English. Only what is left (other Latin or Cyrillic languages, Han without
kana) goes to ``langdetect``, seeded so the same text always gets the same label, and only when there is enough
of it: below ``STATISTICAL_MIN_LETTERS`` its guesses are noise ("Green Day" came out German) at ~5 ms a call,
which made language detection most of an RDB sync's time.

Code blocks, inline code, URLs and email addresses are removed before counting: they are Latin letters but not
English prose, and Korean technical documents are full of them. So are ``field:`` labels at the start of a line
(the column names of a rendered database row, front-matter keys): identifiers, not the row's language.
"""

from __future__ import annotations

import re
import threading
from typing import Any

UNKNOWN = "unknown"
MIXED = "mixed"

# One Hangul syllable carries roughly what 2-3 Latin letters do, so counts are weighted before comparing.
HANGUL_WEIGHT = 2.5
KO_MIN_SHARE = 0.65  # weighted Hangul share at or above which text is Korean
MIXED_MIN_SHARE = 0.2  # ... at or above which (and below KO_MIN_SHARE) it is Korean/Latin mixed
MIN_LETTERS = 3  # fewer letters than this: nothing to decide on
EN_MIN_STOPWORD_SHARE = 0.12  # share of words that are English function words for the English fast path
# fewer Latin letters than this (after the fast paths) is too little for a statistical guess: ``unknown``
STATISTICAL_MIN_LETTERS = 40
# ... and fewer letters than this in lower-case words: what carries a language (function words, verbs) is written in
# lower case; names, titles and addresses (most of a customer table) are capitalised and say nothing about it
STATISTICAL_MIN_LOWERCASE_LETTERS = 15
# langdetect's random-restart count (its default is 7): its cost is linear in this; 3 gives the same labels on the
# sample documents at less than half the cost
STATISTICAL_TRIALS = 3

_NOT_PROSE = re.compile(
    r"`[^`\n]*`"  # inline code
    r"|[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"  # email addresses
    r"|\b(?:https?|ftp)://\S+|\]\([^)\s]*\)"  # URLs, markdown link targets
)
_FIELD_LABEL = re.compile(r"^[ \t]*[A-Za-z_][A-Za-z0-9_.-]{0,63}:[ \t]", re.MULTILINE)
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_LATIN_RUN = re.compile(r"[A-Za-z\u00c0-\u024f]+")
_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
# scripts written (almost) by a single language → that language, no statistics needed
_SINGLE_LANGUAGE_SCRIPTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("el", re.compile(r"[\u0370-\u03ff]")),
    ("he", re.compile(r"[\u0590-\u05ff]")),
    ("th", re.compile(r"[\u0e00-\u0e7f]")),
    ("hy", re.compile(r"[\u0530-\u058f]")),
    ("ka", re.compile(r"[\u10a0-\u10ff]")),
)
_ARABIC = re.compile(r"[\u0600-\u06ff]")
_DEVANAGARI = re.compile(r"[\u0900-\u097f]")
# the union of the non-Latin, non-Hangul scripts above
_ANY_OTHER_SCRIPT = re.compile(
    r"[\u0370-\u03ff\u0400-\u04ff\u0530-\u058f\u0590-\u05ff\u0600-\u06ff\u0900-\u097f\u0e00-\u0e7f"
    r"\u10a0-\u10ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]"
)
_EN_STOPWORDS_TEXT = (
    "the of and to in a is that for it as was with be by on not he i this are or his from at which but have an "
    "they you were her she there been one all we their has would when if can more will no so its also than "
    "these into other some may our such what about only after most"
)
_EN_STOPWORDS = frozenset(_EN_STOPWORDS_TEXT.split())


def script_counts(text: str) -> dict[str, int]:
    """Letters per script in ``text`` (code and URLs removed), for the fast path and for diagnostics."""
    prose = _strip_non_prose(text)
    counts = {"hangul": len(_HANGUL.findall(prose)), "latin": len(_LATIN.findall(prose))}
    counts["han"] = len(_HAN.findall(prose))
    counts["kana"] = len(_KANA.findall(prose))
    counts["cyrillic"] = len(_CYRILLIC.findall(prose))
    counts["arabic"] = len(_ARABIC.findall(prose))
    counts["devanagari"] = len(_DEVANAGARI.findall(prose))
    for lang, pattern in _SINGLE_LANGUAGE_SCRIPTS:
        counts[lang] = len(pattern.findall(prose))
    return counts


def detect_language(text: str) -> str:
    """``ko``, ``en``, ``mixed``, another ISO 639-1 code, or ``unknown`` for text with (almost) no letters or
    too little Latin text to tell its language."""
    prose = _strip_non_prose(text)
    ascii_only = prose.isascii()
    hangul = 0 if ascii_only else len(_HANGUL.findall(prose))
    latin = sum(map(len, _LATIN_RUN.findall(prose)))  # runs, not single letters: far fewer list items
    if hangul:
        share = hangul * HANGUL_WEIGHT / (hangul * HANGUL_WEIGHT + latin)
        if share >= KO_MIN_SHARE:
            return "ko"
        if share >= MIXED_MIN_SHARE:
            return MIXED
    if not ascii_only:
        other = _dominant_other_script(prose, latin)
        if other is not None:
            return other
    if latin < MIN_LETTERS:
        return UNKNOWN
    if _looks_english(prose):
        return "en"
    if latin < STATISTICAL_MIN_LETTERS or _lowercase_letters(prose) < STATISTICAL_MIN_LOWERCASE_LETTERS:
        return UNKNOWN
    return _statistical(prose)


def _strip_non_prose(text: str) -> str:
    if ":" in text:
        text = _FIELD_LABEL.sub("", text)
    if "```" in text:
        text = _drop_fenced_code(text)
    if "`" in text or "://" in text or "](" in text or "@" in text:
        return _NOT_PROSE.sub(" ", text)
    return text


_CODE_CHARS = re.compile(r"[{}()\[\];=<>\"'+\-*/|&$#:,.]")


_OPENING_FENCE = re.compile(r"```[A-Za-z0-9_+\-]+[ \t]*(?:\n|$)")


def _drop_fenced_code(text: str) -> str:
    """Drop fenced code blocks. A chunk may start or end inside one, so fences cannot simply be paired from the
    left: the pieces between fences alternate prose/code, and which alternation holds is read off the first
    fence with a language tag (```js opens a block), else off which alternation is denser in code punctuation."""
    pieces = text.split("```")
    tagged = _OPENING_FENCE.search(text)
    if tagged is not None:
        fences_before = text.count("```", 0, tagged.start())
        starts_in_code = fences_before % 2 == 1
    else:
        starts_in_code = _code_density(pieces[0::2]) > _code_density(pieces[1::2])
    return "\n".join(pieces[1::2] if starts_in_code else pieces[0::2])


def _code_density(parts: list[str]) -> float:
    joined = _NOT_PROSE.sub("", "".join(parts))
    return len(_CODE_CHARS.findall(joined)) / (len(joined) + 1)


def _dominant_other_script(prose: str, latin: int) -> str | None:
    """A language read off a non-Latin script that outweighs the Latin letters, else None."""
    if len(_ANY_OTHER_SCRIPT.findall(prose)) <= latin:  # one scan rules out every script below at once
        return None
    han, kana = len(_HAN.findall(prose)), len(_KANA.findall(prose))
    if kana and kana + han > latin:
        return "ja"
    if han > latin:
        return _statistical(prose, default="zh")
    for lang, pattern in _SINGLE_LANGUAGE_SCRIPTS:
        if len(pattern.findall(prose)) > latin:
            return lang
    for pattern in (_CYRILLIC, _ARABIC, _DEVANAGARI):  # shared by several languages: ask the detector
        if len(pattern.findall(prose)) > latin:
            return _statistical(prose)
    return None


def _looks_english(prose: str) -> bool:
    # whitespace tokens (a C-speed split instead of a word regex); numbers, codes and phone numbers are not words
    tokens = [t for t in prose[:3000].lower().split() if not t[0].isdigit()]
    if len(tokens) < 3:
        return False
    hits = sum(1 for t in tokens if t in _EN_STOPWORDS)
    return hits / len(tokens) >= EN_MIN_STOPWORD_SHARE


def _lowercase_letters(prose: str) -> int:
    return sum(len(t) for t in prose[:3000].split() if t[0].islower())


_detector_lock = threading.Lock()
_factory_ready = False


def _statistical(prose: str, default: str = UNKNOWN) -> str:
    """langdetect on the first 2000 characters (enough for a label; its cost grows with length)."""
    global _factory_ready
    from langdetect import DetectorFactory, detector_factory
    from langdetect.lang_detect_exception import LangDetectException

    with _detector_lock:
        if not _factory_ready:
            DetectorFactory.seed = 0  # deterministic: same text → same label
            detector_factory.init_factory()
            _factory_ready = True
    try:
        detector: Any = detector_factory._factory.create()  # the module-level factory init_factory() loaded
        detector.n_trial = STATISTICAL_TRIALS
        detector.append(prose[:2000])
        lang = str(detector.detect())
    except LangDetectException:
        return default
    return _normalise_code(lang)


def _normalise_code(code: str) -> str:
    # langdetect reports zh-cn / zh-tw; the chunk label is the bare ISO 639-1 code
    return code.split("-", 1)[0].lower()
