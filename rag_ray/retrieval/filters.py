"""The one expression every retrieval path searches with: the caller's access filter AND the governance policy (by
sensitivity label) AND the caller's structured filters — composed by AND, never OR."""

from __future__ import annotations

from typing import Any

from rag_ray.enrich.policy import GovernancePolicy, policy_filter
from rag_ray.store.filters import access_filter, and_all, user_filter
from rag_ray.types import Principal


def retrieval_filter(principal: Principal, raw_filters: Any = None, policy: GovernancePolicy | None = None, *,
                     keyed_groups: bool = True) -> str:
    """``policy`` narrows the ACL by each chunk's sensitivity label; None: no policy. ``keyed_groups``: the
    collection has ``group_key`` (``ChunkStore.keyed_groups``)."""
    governance = policy_filter(principal, policy, keyed_groups=keyed_groups) if policy is not None else ""
    return and_all(access_filter(principal, keyed_groups=keyed_groups), governance, user_filter(raw_filters))
