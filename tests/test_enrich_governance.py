"""Sensitivity rules, compliance tags, and the governance policy's Milvus filter and masking."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rag_ray.enrich.policy import GovernancePolicy, mask_hit_text, policy_filter
from rag_ray.enrich.sensitivity import SensitivityRules, compliance_tags, max_sensitivity
from rag_ray.store.filters import access_filter, and_all
from rag_ray.types import Principal

RULES = SensitivityRules()


@pytest.mark.parametrize(("text", "expected"), [
    ("이 문서는 기밀 정보를 포함합니다.", "confidential"),
    ("[대외비] 2025년 사업 계획", "confidential"),
    ("극비 — 임원 보고용", "restricted"),
    ("외부유출금지 자료입니다", "confidential"),  # spacing in Korean keywords is optional
    ("사내용 가이드", "internal"),
    ("CONFIDENTIAL: merger terms", "confidential"),
    ("For Internal\nUse Only", "internal"),
    ("TOP SECRET//NOFORN", "restricted"),
    ("Strictly confidential — board only", "restricted"),
    ("The secret ingredient is love.", "confidential"),
    ("Insulin secretion increased after treatment.", "public"),  # whole words only
    ("Internally, the cell regulates it.", "public"),
    ("모든 인간은 태어날 때부터 자유롭다.", "public"),
])
def test_keyword_levels(text: str, expected: str) -> None:
    assert RULES.classify(text) == expected


@pytest.mark.parametrize(("pii", "expected"), [
    ([], "public"), (["ip"], "internal"), (["email"], "confidential"), (["phone"], "confidential"),
    (["account"], "confidential"), (["rrn"], "restricted"), (["card"], "restricted"), (["passport"], "restricted"),
    (["email", "card"], "restricted"),
])
def test_pii_levels(pii: list[str], expected: str) -> None:
    assert RULES.classify("plain text", pii) == expected


def test_highest_rule_wins() -> None:
    assert RULES.classify("사내용 문서", ["rrn"]) == "restricted"
    assert RULES.classify("극비", ["email"]) == "restricted"


def test_rules_are_configurable() -> None:
    rules = SensitivityRules(keywords={"restricted": ["project falcon"], "internal": ["draft"]},
                             pii_levels={"email": "internal"}, default="internal")
    assert rules.classify("Project  Falcon kickoff") == "restricted"
    assert rules.classify("기밀") == "internal"  # default keywords replaced, default level internal
    assert rules.classify("x", ["email"]) == "internal"
    assert rules.classify("x", ["rrn"]) == "internal"  # not in pii_levels → no effect
    with pytest.raises(ValidationError):
        SensitivityRules(keywords={"top": ["x"]})  # type: ignore[dict-item]
    with pytest.raises(ValidationError):
        SensitivityRules(colour="red")  # type: ignore[call-arg]


def test_max_sensitivity() -> None:
    assert max_sensitivity([]) == "public"
    assert max_sensitivity(["internal", "restricted", "public"]) == "restricted"
    assert max_sensitivity(["bogus", "internal"]) == "internal"


@pytest.mark.parametrize(("pii", "tags"), [
    ([], []),
    (["email"], ["contains-PII", "contains-contact-info"]),
    (["phone", "email"], ["contains-PII", "contains-contact-info"]),
    (["card"], ["contains-PII", "contains-financial-id"]),
    (["account"], ["contains-PII", "contains-financial-id"]),
    (["rrn"], ["contains-PII", "contains-national-id"]),
    (["passport", "card"], ["contains-PII", "contains-financial-id", "contains-national-id"]),
    (["ip"], ["contains-PII"]),
])
def test_compliance_tags(pii: list[str], tags: list[str]) -> None:
    assert compliance_tags(pii) == tags


# ---- policy ----
USER = Principal(user_id="u1", group_ids=("g1", "g2"))
LONER = Principal(user_id="u2")
ADMIN = Principal(user_id="root", role="admin")


def test_policy_filter_default_exact() -> None:
    assert policy_filter(USER, GovernancePolicy()) == (
        'owner_id == "u1" or sensitivity not in ["confidential", "restricted"] or '
        '(sensitivity in ["confidential"] and (group_key like "%|6731|%" or group_key like "%|6732|%"))'
    )
    assert policy_filter(USER, GovernancePolicy(), keyed_groups=False).endswith(
        '(sensitivity in ["confidential"] and array_contains_any(group_ids, ["g1", "g2"]))')
    assert policy_filter(LONER) == 'owner_id == "u2" or sensitivity not in ["confidential", "restricted"]'
    assert policy_filter(ADMIN) == ""


def test_policy_filter_variants_exact() -> None:
    strict = GovernancePolicy(owner_only={"restricted", "confidential"}, group_only={"internal"})
    assert policy_filter(USER, strict) == (
        'owner_id == "u1" or sensitivity not in ["internal", "confidential", "restricted"] or '
        '(sensitivity in ["internal"] and (group_key like "%|6731|%" or group_key like "%|6732|%"))'
    )
    assert policy_filter(USER, GovernancePolicy(owner_only=frozenset(), group_only=frozenset())) == ""
    owner_only = GovernancePolicy(group_only=frozenset())
    assert policy_filter(USER, owner_only) == 'owner_id == "u1" or sensitivity not in ["restricted"]'


def test_policy_filter_escapes_values() -> None:
    hostile = Principal(user_id='x" or owner_id != "', group_ids=('g") or true or ("',))
    assert policy_filter(hostile, keyed_groups=False) == (
        'owner_id == "x\\" or owner_id != \\"" or sensitivity not in ["confidential", "restricted"] or '
        '(sensitivity in ["confidential"] and array_contains_any(group_ids, ["g\\") or true or (\\""]))'
    )
    assert policy_filter(hostile) == (
        'owner_id == "x\\" or owner_id != \\"" or sensitivity not in ["confidential", "restricted"] or '
        '(sensitivity in ["confidential"] and (group_key like "%|672229206f722074727565206f72202822|%"))'
    )


def test_policy_filter_composes_with_acl() -> None:
    combined = and_all(access_filter(LONER), policy_filter(LONER))
    assert combined == (
        '(owner_id == "u2" or visibility == "public") and '
        '(owner_id == "u2" or sensitivity not in ["confidential", "restricted"])'
    )


def test_policy_rejects_overlap_and_unknown_levels() -> None:
    with pytest.raises(ValidationError):
        GovernancePolicy(owner_only={"restricted"}, group_only={"restricted"})
    with pytest.raises(ValidationError):
        GovernancePolicy(owner_only={"secret"})  # type: ignore[arg-type]


def test_mask_hit_text() -> None:
    text = "연락처 010-1234-5678, hr@example.com"
    masked = "연락처 [PHONE], [EMAIL]"
    assert mask_hit_text(text, USER) == masked
    assert mask_hit_text(text, ADMIN) == text
    assert mask_hit_text(text, USER, owner_id="u1") == text  # owners see their own data
    assert mask_hit_text(text, USER, GovernancePolicy(unmask_for_owner=False), owner_id="u1") == masked
    assert mask_hit_text(text, USER, GovernancePolicy(mask_pii_for_non_admins=False)) == text
    assert mask_hit_text(text, USER, GovernancePolicy(mask_types=frozenset({"email"}))) == \
        "연락처 010-1234-5678, [EMAIL]"
    assert mask_hit_text("", USER) == ""
