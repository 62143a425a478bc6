"""Sensitivity classes and compliance tags from keyword rules plus PII findings.

Classes, least to most sensitive: ``public`` < ``internal`` < ``confidential`` < ``restricted``. A chunk gets the
highest class any rule gives it: a marking keyword (기밀, 대외비, "confidential", "internal use only", ...), or a
kind of PII it contains (resident registration number or card number → restricted; email or phone →
confidential; ...). Rules are data (:class:`SensitivityRules`), so deployments can tune them from config.

English keywords match whole words, case-insensitively ("secret" does not match "secretion"); Korean keywords
match as substrings (Korean attaches particles: 기밀입니다, 대외비로).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Sensitivity = Literal["public", "internal", "confidential", "restricted"]
SENSITIVITY_LEVELS: tuple[Sensitivity, ...] = ("public", "internal", "confidential", "restricted")
_RANK: dict[str, int] = {name: i for i, name in enumerate(SENSITIVITY_LEVELS)}

# compliance tag → PII types that set it
COMPLIANCE_TAGS: dict[str, frozenset[str]] = {
    "contains-PII": frozenset({"email", "phone", "rrn", "card", "account", "ip", "passport"}),
    "contains-contact-info": frozenset({"email", "phone"}),
    "contains-financial-id": frozenset({"card", "account"}),
    "contains-national-id": frozenset({"rrn", "passport"}),
}


def _default_keywords() -> dict[Sensitivity, list[str]]:
    return {
        "restricted": ["극비", "top secret", "strictly confidential", "restricted distribution", "취급 제한"],
        "confidential": ["기밀", "대외비", "외부 유출 금지", "confidential", "secret", "not for distribution"],
        "internal": ["사내용", "내부용", "사내 한정", "내부 자료",
                     "internal use only", "for internal use", "internal only"],
    }


def _default_pii_levels() -> dict[str, Sensitivity]:
    return {"rrn": "restricted", "card": "restricted", "passport": "restricted", "account": "confidential",
            "email": "confidential", "phone": "confidential", "ip": "internal"}


class SensitivityRules(BaseModel):
    """What makes a chunk sensitive. Every list and mapping is configurable; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keywords: dict[Sensitivity, list[str]] = Field(default_factory=_default_keywords)
    pii_levels: dict[str, Sensitivity] = Field(default_factory=_default_pii_levels)
    default: Sensitivity = "public"

    @cached_property
    def _keyword_checks(self) -> list[tuple[Sensitivity, str, re.Pattern[str]]]:
        """(level, cheap lowercase substring that must be present, exact regex), most sensitive level first.

        The substring test is a C-speed ``in`` on the lowercased text; the regex (word boundaries, flexible
        spacing) runs only when it hits, which for almost every chunk is never.
        """
        checks = []
        for level in reversed(SENSITIVITY_LEVELS):
            for word in self.keywords.get(level, []):
                parts = word.lower().split()
                if parts:
                    checks.append((level, parts[0], re.compile(_keyword_regex(word), re.IGNORECASE)))
        return checks

    def keyword_level(self, text: str) -> Sensitivity | None:
        lowered = text.lower()
        for level, needle, pattern in self._keyword_checks:
            if needle in lowered and pattern.search(text):
                return level
        return None

    def classify(self, text: str, pii_types: Iterable[str] = ()) -> Sensitivity:
        levels = [self.default]
        keyword = self.keyword_level(text)
        if keyword is not None:
            levels.append(keyword)
        levels.extend(self.pii_levels[t] for t in pii_types if t in self.pii_levels)
        return max_sensitivity(levels)


def _keyword_regex(word: str) -> str:
    # a space in an English keyword matches any whitespace run (PDF line breaks); in Korean spacing is optional
    # (외부 유출 금지 = 외부유출금지). ASCII keywords match whole words only.
    if word.isascii():
        return r"(?<!\w)" + r"\s+".join(re.escape(part) for part in word.split()) + r"(?!\w)"
    return r"\s*".join(re.escape(part) for part in word.split())


def max_sensitivity(levels: Iterable[str]) -> Sensitivity:
    """The most sensitive of ``levels`` (unknown values count as public); ``public`` for none."""
    best: Sensitivity = "public"
    for level in levels:
        if _RANK.get(level, 0) > _RANK[best]:
            best = SENSITIVITY_LEVELS[_RANK[level]]
    return best


def compliance_tags(pii_types: Iterable[str]) -> list[str]:
    """Sorted compliance tags implied by the PII types found."""
    found = set(pii_types)
    return sorted(tag for tag, types in COMPLIANCE_TAGS.items() if found & types)
