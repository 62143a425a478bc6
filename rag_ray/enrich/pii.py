"""Rule-based PII detection and masking for Korean and English text.

Detectors (type → mask token):

- ``email`` → ``[EMAIL]``: ``local@domain.tld``.
- ``phone`` → ``[PHONE]``: Korean mobile (``010-1234-5678``, ``01012345678``, ``010.1234.5678``), Korean landline
  with separators (``02-123-4567``, ``(031) 123-4567``, ``070-1234-5678``), ``+82`` forms (``+82 10 1234 5678``,
  ``+82-2-123-4567``), other international numbers starting with ``+`` (8-15 digits, E.164), and North-American
  ``(555) 234-5678`` / ``555-234-5678``.
- ``rrn`` → ``[RRN]``: Korean resident registration number ``YYMMDD-GNNNNNN``. The birth date must be a real date
  (century from the gender digit 1-8; 9/0, the 1800s, are not accepted) and not in the future. With the hyphen
  (or a space) the checksum is NOT required: numbers issued since October 2020 have random trailing digits and
  no longer satisfy it, so requiring it would miss real ones. Without a separator, a bare 13-digit run is too
  common (order ids, barcodes) to flag on the date alone, so there the checksum IS required.
- ``card`` → ``[CARD]``: 13-19 digits, optionally in groups separated by one consistent space or hyphen, with a
  known brand prefix (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay) and a valid Luhn checksum.
- ``account`` → ``[ACCOUNT]``: Korean bank account numbers written with hyphens in the group layouts the large
  banks use (6-2-6, 3-3-6, 4-3-6, 3-6-5, 3-4-4-2, 3-6-2-3, 4-2-7, 3-2-6). Hyphens are required: bare digit runs are
  indistinguishable from any other number.
- ``ip`` → ``[IP]``: IPv4 dotted quads (octets 0-255, no leading zeros) and IPv6 (validated by ``ipaddress``; must
  contain a decimal digit and two non-empty groups, so C++ ``a::b`` is not an address). A dotted quad right after
  ``v``/``version``/``ver.``/``버전``/``EC`` or followed by a fifth part is a version number, not an address.
- ``passport`` → ``[PASSPORT]``: Korean passport numbers (``M12345678``, ``M123A4567``) only within 30 characters
  after the word passport/여권 — without context a letter and eight digits is too often something else.

Near-misses deliberately NOT flagged: invalid Luhn, ISO dates (``2024-01-15``), ISBNs (``978-89-...``), times
(``12:30:45``), 5-part versions, digit runs without separators other than the ones listed above.

Overlaps are resolved by priority (rrn > card > account > phone > passport > ip > email): a span claimed by an
earlier detector is not reported again by a later one.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

PII_TYPES = ("rrn", "card", "account", "phone", "passport", "ip", "email")
MASK_TOKENS = {
    "email": "[EMAIL]", "phone": "[PHONE]", "rrn": "[RRN]", "card": "[CARD]", "ip": "[IP]",
    "account": "[ACCOUNT]", "passport": "[PASSPORT]",
}


@dataclass(frozen=True)
class PiiFinding:
    type: str
    start: int
    end: int
    value: str


# ---- patterns (compiled once) ----
_DIGIT = re.compile(r"\d")
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![\w-])")

_NUM_START = r"(?<![\w+.\-])"  # not glued to a longer token on the left
_NUM_END = r"(?![\-.]?\d)(?![^\W\d_])"  # no more digits after (a sentence-ending '.' is fine), no letter glued on
_PHONE = re.compile(
    _NUM_START + r"(?:"
    r"01[016789](?P<s1>[-. ]?)\d{3,4}(?P=s1)\d{4}"  # Korean mobile
    r"|(?:0(?:2|[3-6][1-5]|70|50\d)|\(0(?:2|[3-6][1-5]|70)\))[-. ]?\d{3,4}[-. ]\d{4}"  # Korean landline / VoIP
    r"|\+82[-. ]?(?:\(0\))?(?:1[016789]|2|[3-6][1-5]|70)[-. ]?\d{3,4}[-. ]?\d{4}"  # Korea, international form
    r"|\+(?!82)[1-9]\d{0,2}(?:[-. ]?\(?\d{1,4}\)?){2,5}"  # other international (digit count checked below)
    r"|(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[-.])[2-9]\d{2}[-.]\d{4}"  # North American
    r")" + _NUM_END
)
_RRN = re.compile(
    r"(?<![\w\-])(?P<date>\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]))(?P<sep>[- ]?)(?P<gender>[1-8])(?P<rest>\d{6})"
    + _NUM_END
)
_CARD = re.compile(
    _NUM_START + r"(?:"
    r"\d{4}(?P<s>[- ]?)\d{4}(?P=s)\d{4}(?P=s)\d{1,7}"  # 4-4-4-x (13-19 digits)
    r"|3[47]\d{2}(?P<a>[- ]?)\d{6}(?P=a)\d{5}"  # Amex 4-6-5
    r"|3[068]\d{2}(?P<d>[- ]?)\d{6}(?P=d)\d{4}"  # Diners 4-6-4
    r")" + _NUM_END
)
_ACCOUNT_LAYOUTS = ("6-2-6", "3-3-6", "4-3-6", "3-6-5", "3-4-4-2", "3-6-2-3", "4-2-7", "3-2-6")
_ACCOUNT = re.compile(
    _NUM_START
    + "(?:"
    + "|".join("-".join(rf"\d{{{n}}}" for n in layout.split("-")) for layout in _ACCOUNT_LAYOUTS)
    + ")"
    + _NUM_END
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(r"(?<![\w.])" + rf"{_OCTET}(?:\.{_OCTET}){{3}}" + r"(?!\.?\d)(?![^\W\d_])")
# dotted quads that are version numbers or enzyme (EC) numbers, not addresses
_VERSION_CONTEXT = re.compile(r"(?:\bv|\bversion\s*|\bver\.?\s*|버전\s*|\bEC\s*)$", re.I)
_IPV6_CANDIDATE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PASSPORT = re.compile(
    r"(?:passport|여권)[^\n]{0,30}?(?<![A-Za-z0-9])(?P<num>[MSRGD]\d{8}|M\d{3}[A-Z]\d{4})(?![A-Za-z0-9])", re.I
)

_CARD_BRANDS: tuple[tuple[str, Callable[[str], bool], tuple[int, ...]], ...] = (
    ("amex", lambda d: d[:2] in ("34", "37"), (15,)),
    ("visa", lambda d: d[0] == "4", (13, 16, 19)),
    ("mastercard", lambda d: 51 <= int(d[:2]) <= 55 or 2221 <= int(d[:4]) <= 2720, (16,)),
    ("discover", lambda d: d[:4] == "6011" or d[:2] == "65" or 644 <= int(d[:3]) <= 649, (16, 17, 18, 19)),
    ("jcb", lambda d: 3528 <= int(d[:4]) <= 3589, (16, 17, 18, 19)),
    ("diners", lambda d: 300 <= int(d[:3]) <= 305 or d[:2] in ("36", "38"), (14, 15, 16, 17, 18, 19)),
    ("unionpay", lambda d: d[:2] == "62", (16, 17, 18, 19)),
)


# ---- validators ----
def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """The brand whose prefix and length match ``digits`` (separators removed), else None."""
    for brand, prefix_ok, lengths in _CARD_BRANDS:
        if len(digits) in lengths and prefix_ok(digits):
            return brand
    return None


def rrn_checksum_valid(digits: str) -> bool:
    weights = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
    total = sum(int(d) * w for d, w in zip(digits[:12], weights, strict=True))
    return (11 - total % 11) % 10 == int(digits[12])


def rrn_birth_date(date6: str, gender: str) -> _dt.date | None:
    century = 1900 if gender in "1256" else 2000
    try:
        born = _dt.date(century + int(date6[:2]), int(date6[2:4]), int(date6[4:6]))
    except ValueError:
        return None
    return born if born <= _dt.date.today() else None


# ---- detectors: each yields findings for one type ----
# Every digit-bearing PII value sits inside a run of digits and separators at least 7 characters long. One scan
# finds those runs; the detectors then only look inside them (plus a 2-character margin on the right for their
# lookaheads; lookbehinds see the whole text), instead of each scanning the whole chunk.
_CANDIDATE = re.compile(r"[+(]?\d[\d \-.()]{5,}\d")
Window = tuple[int, int]


def candidate_windows(text: str) -> list[Window]:
    return [(m.start(), min(len(text), m.end() + 2)) for m in _CANDIDATE.finditer(text)]


def _iter_email(text: str) -> Iterator[PiiFinding]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        yield PiiFinding("email", m.start(), m.end(), m.group())


def _iter_phone(text: str, pos: int, endpos: int) -> Iterator[PiiFinding]:
    for m in _PHONE.finditer(text, pos, endpos):
        value = m.group()
        digits = sum(ch.isdigit() for ch in value)
        if value.startswith("+") and not 8 <= digits <= 15:
            continue
        yield PiiFinding("phone", m.start(), m.end(), value)


def _iter_rrn(text: str, pos: int, endpos: int) -> Iterator[PiiFinding]:
    for m in _RRN.finditer(text, pos, endpos):
        if rrn_birth_date(m["date"], m["gender"]) is None:
            continue
        if not m["sep"] and not rrn_checksum_valid(m["date"] + m["gender"] + m["rest"]):
            continue
        yield PiiFinding("rrn", m.start(), m.end(), m.group())


def _iter_card(text: str, pos: int, endpos: int) -> Iterator[PiiFinding]:
    for m in _CARD.finditer(text, pos, endpos):
        digits = re.sub(r"\D", "", m.group())
        if card_brand(digits) and luhn_valid(digits):
            yield PiiFinding("card", m.start(), m.end(), m.group())


def _iter_account(text: str, pos: int, endpos: int) -> Iterator[PiiFinding]:
    for m in _ACCOUNT.finditer(text, pos, endpos):
        yield PiiFinding("account", m.start(), m.end(), m.group())


def _iter_ipv4(text: str, pos: int, endpos: int) -> Iterator[PiiFinding]:
    for m in _IPV4.finditer(text, pos, endpos):
        if _VERSION_CONTEXT.search(text, max(0, m.start() - 12), m.start()):
            continue
        yield PiiFinding("ip", m.start(), m.end(), m.group())


def _iter_ipv6(text: str) -> Iterator[PiiFinding]:
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6_CANDIDATE.finditer(text):
            if _plausible_ipv6(m.group()):
                yield PiiFinding("ip", m.start(), m.end(), m.group())


def _plausible_ipv6(candidate: str) -> bool:
    groups = [g for g in candidate.split(":") if g]
    if len(groups) < 2 or not _DIGIT.search(candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _iter_passport(text: str) -> Iterator[PiiFinding]:
    if "여권" not in text and "passport" not in text.lower():
        return
    for m in _PASSPORT.finditer(text):
        yield PiiFinding("passport", m.start("num"), m.end("num"), m["num"])


# in priority order: an earlier detector's span wins an overlap
_WINDOWED_DETECTORS: tuple[tuple[str, Callable[[str, int, int], Iterator[PiiFinding]]], ...] = (
    ("rrn", _iter_rrn), ("card", _iter_card), ("account", _iter_account), ("phone", _iter_phone),
)
_WHOLE_TEXT_DETECTORS: tuple[tuple[str, Callable[[str], Iterator[PiiFinding]]], ...] = (
    ("passport", _iter_passport), ("ip", _iter_ipv6), ("email", _iter_email),
)


def find_pii(text: str, types: Iterable[str] | None = None) -> list[PiiFinding]:
    """Every PII finding in ``text``, sorted by position, overlaps resolved by detector priority.

    ``types`` limits detection to those types (default: all of :data:`PII_TYPES`).
    """
    wanted = set(PII_TYPES if types is None else types)
    claimed: list[PiiFinding] = []

    def claim(findings: Iterable[PiiFinding]) -> None:
        for finding in findings:
            if not any(_overlaps(finding, c) for c in claimed):
                claimed.append(finding)

    windows = candidate_windows(text) if _DIGIT.search(text) else []
    for pii_type, windowed in _WINDOWED_DETECTORS:
        if pii_type in wanted:
            for pos, endpos in windows:
                claim(windowed(text, pos, endpos))
    for pii_type, whole in _WHOLE_TEXT_DETECTORS:
        if pii_type == "ip" and "ip" in wanted:
            for pos, endpos in windows:
                claim(_iter_ipv4(text, pos, endpos))
        if pii_type in wanted:
            claim(whole(text))
    return sorted(claimed, key=lambda f: f.start)


def _overlaps(a: PiiFinding, b: PiiFinding) -> bool:
    return a.start < b.end and b.start < a.end


def pii_counts(findings: Iterable[PiiFinding]) -> dict[str, int]:
    return dict(sorted(Counter(f.type for f in findings).items()))


def mask_pii(text: str, types: Iterable[str] | None = None, findings: list[PiiFinding] | None = None) -> str:
    """``text`` with each PII span replaced by its token (``[EMAIL]``, ``[PHONE]``, ``[RRN]``, ...)."""
    if findings is None:
        findings = find_pii(text, types)
    if not findings:
        return text
    parts: list[str] = []
    pos = 0
    for f in findings:
        parts.append(text[pos:f.start])
        parts.append(MASK_TOKENS[f.type])
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)
