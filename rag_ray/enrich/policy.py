"""Data-governance policy on the retrieval path: who may read chunks of each sensitivity, and PII masking.

The ACL (:func:`rag_ray.store.filters.access_filter`) says who may read a chunk by owner, groups and visibility.
The policy narrows that by the chunk's ``sensitivity`` label, whatever its visibility:

- ``owner_only`` classes (default: restricted) — only the chunk's owner (and admins);
- ``group_only`` classes (default: confidential) — the owner, members of one of the chunk's groups, and admins;
- every other class — whatever the ACL allows.

:func:`policy_filter` renders that as one more Milvus expression to AND with the ACL, built only from
:func:`~rag_ray.store.filters.literal` / :func:`~rag_ray.store.filters.literal_list`. :func:`mask_hit_text`
masks PII in text returned to non-admins when the policy says so.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rag_ray.enrich.pii import mask_pii
from rag_ray.enrich.sensitivity import SENSITIVITY_LEVELS, Sensitivity
from rag_ray.store.filters import in_any_group, literal, literal_list
from rag_ray.types import Principal


class GovernancePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    owner_only: frozenset[Sensitivity] = Field(default=frozenset({"restricted"}))
    group_only: frozenset[Sensitivity] = Field(default=frozenset({"confidential"}))
    mask_pii_for_non_admins: bool = True
    # the owner of a chunk sees their own PII unmasked (only when the caller passes the hit's owner)
    unmask_for_owner: bool = True
    mask_types: frozenset[str] | None = None  # None: every PII type

    @model_validator(mode="after")
    def _disjoint(self) -> GovernancePolicy:
        both = self.owner_only & self.group_only
        if both:
            raise ValueError(f"sensitivities {sorted(both)} are in both owner_only and group_only")
        return self


DEFAULT_POLICY = GovernancePolicy()


def _ordered(levels: frozenset[str]) -> list[str]:
    return [level for level in SENSITIVITY_LEVELS if level in levels]


def policy_filter(principal: Principal, policy: GovernancePolicy = DEFAULT_POLICY, *, keyed_groups: bool = True) -> str:
    """Extra Milvus expression to AND with the ACL; ``""`` when it restricts nothing (admins, empty policy).

    Example (user ``u1`` in group ``g1``, default policy; ``6731`` is ``g1`` in hex, see ``in_any_group``)::

        owner_id == "u1" or sensitivity not in ["confidential", "restricted"]
        or (sensitivity in ["confidential"] and (group_key like "%|6731|%"))
    """
    if principal.is_admin:
        return ""
    guarded = _ordered(policy.owner_only | policy.group_only)
    if not guarded:
        return ""
    rules = [f"owner_id == {literal(principal.user_id)}", f"sensitivity not in {literal_list(guarded)}"]
    group_levels = _ordered(policy.group_only)
    if group_levels and principal.group_ids:
        rules.append(f"(sensitivity in {literal_list(group_levels)} and "
                     f"{in_any_group(principal.group_ids, keyed=keyed_groups)})")
    return " or ".join(rules)


def should_mask(principal: Principal, policy: GovernancePolicy = DEFAULT_POLICY, owner_id: str | None = None) -> bool:
    if principal.is_admin or not policy.mask_pii_for_non_admins:
        return False
    return not (policy.unmask_for_owner and owner_id is not None and owner_id == principal.user_id)


def mask_hit_text(text: str, principal: Principal, policy: GovernancePolicy = DEFAULT_POLICY,
                  owner_id: str | None = None) -> str:
    """``text`` as ``principal`` may see it: PII masked for non-admins (and non-owners) when the policy says so."""
    if not text or not should_mask(principal, policy, owner_id):
        return text
    return mask_pii(text, types=policy.mask_types)
