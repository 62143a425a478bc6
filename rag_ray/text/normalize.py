"""Text normalisation applied to every parsed document before chunking.

Goals: one canonical form per visible text (NFKC, so ``ﬁ`` becomes ``fi``), whitespace that a
tokenizer and a human both read the same way, and Korean left intact.
"""

from __future__ import annotations

import re
import unicodedata

# NFKC would turn Hangul compatibility jamo (ㅋ U+314B, what Korean keyboards type) into
# conjoining jamo (ᄏ U+110F) that no longer match what users search for, and circled numbers
# (①, used for clause numbers in Korean legal text) into bare digits. Those runs keep their form.
_NFKC_PROTECTED = re.compile("[\u3131-\u318e\u2460-\u24ff\u2776-\u2793]+")

# Line and page separators become newlines; invisible format characters that only break
# matching (BOM, zero-width space, soft hyphen, word joiner) are dropped.
_TRANSLATE: dict[int, str | None] = {
    0x0B: "\n",  # vertical tab
    0x0C: "\n\n",  # form feed: a page break in extracted text
    0x85: "\n",  # NEL
    0x2028: "\n",
    0x2029: "\n\n",
    0x00AD: None,
    0x200B: None,
    0x2060: None,
    0xFEFF: None,
}
for _code in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]:
    if _code not in (0x09, 0x0A) and _code not in _TRANSLATE:
        _TRANSLATE[_code] = None  # control characters (incl. NUL); tab is whitespace, newline stays

_SURROGATES = re.compile("[\ud800-\udfff]")
_TRAILING_SPACE = re.compile(r"[^\S\n]+(?=\n|\Z)")
_INNER_SPACE = re.compile(r"(?<=\S)[^\S\n]+")
_LEADING_SPACE = re.compile(r"(?m)^[^\S\n]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def _nfkc(text: str) -> str:
    if not _NFKC_PROTECTED.search(text):
        return unicodedata.normalize("NFKC", text)
    parts: list[str] = []
    pos = 0
    for match in _NFKC_PROTECTED.finditer(text):
        parts.append(unicodedata.normalize("NFKC", text[pos:match.start()]))
        parts.append(match.group())
        pos = match.end()
    parts.append(unicodedata.normalize("NFKC", text[pos:]))
    return "".join(parts)


def _indentation(match: re.Match[str]) -> str:
    # Leading indentation carries meaning in Markdown and code; keep its width, tabs as 4 spaces.
    return "".join("    " if ch == "\t" else " " for ch in match.group())


def normalize_text(text: str) -> str:
    """Canonical text: NFKC, no control characters, single spaces between words, at most one blank line.

    Line breaks are kept (``\\n`` and ``\\n\\n`` paragraph breaks), trailing spaces removed, and
    indentation at the start of a line kept (it matters in Markdown/code blocks).
    """
    if not text:
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _SURROGATES.search(text):
        # Pairs that arrived as two code points (JSON, surrogatepass) become one character; lone halves go.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "ignore")
    # Drop invisible characters before NFKC so that what they separated can compose.
    text = _nfkc(text.translate(_TRANSLATE))
    text = _TRAILING_SPACE.sub("", text)
    text = _INNER_SPACE.sub(" ", text)
    text = _LEADING_SPACE.sub(_indentation, text)
    text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip()
