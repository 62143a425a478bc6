"""Milvus boolean expressions, built only here, only from escaped literals.

Milvus Lite does not support ``filter_params`` templates, so every value that reaches an expression
passes through :func:`literal`. User filters arrive as structured clauses over a whitelist of fields
and are ANDed with the caller's access filter — never ORed, never raw text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rag_ray.errors import InvalidInput
from rag_ray.types import Principal

if TYPE_CHECKING:
    from rag_ray.enrich.policy import GovernancePolicy

MAX_FILTER_CLAUSES = 16
MAX_IN_VALUES = 256
MAX_LITERAL_CHARS = 1024

_ESCAPES = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def literal(value: Any) -> str:
    """Render one Python value as a Milvus literal; strings are double-quoted and escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput("filter values must be finite numbers", field="filters.value")
        return repr(value)
    if isinstance(value, str):
        if len(value) > MAX_LITERAL_CHARS:
            raise InvalidInput(f"filter value longer than {MAX_LITERAL_CHARS} characters", field="filters.value")
        if _CONTROL.search(value):
            raise InvalidInput("filter values may not contain control characters", field="filters.value")
        return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'
    raise InvalidInput(f"unsupported filter value type {type(value).__name__}", field="filters.value")


def literal_list(values: Iterable[Any]) -> str:
    items = list(values)
    if len(items) > MAX_IN_VALUES:
        raise InvalidInput(f"at most {MAX_IN_VALUES} values in one filter", field="filters.value")
    return "[" + ", ".join(literal(v) for v in items) + "]"


def and_all(*exprs: str | None) -> str:
    """AND together the non-empty expressions, each parenthesised so none can widen another."""
    parts = [f"({e})" for e in exprs if e]
    return " and ".join(parts)


def access_filter(principal: Principal) -> str:
    """What ``principal`` may read: own chunks, public ones, and group chunks of their groups.

    Admins get an empty filter (everything). This is the only place the ACL expression is built.
    """
    if principal.is_admin:
        return ""
    rules = [f"owner_id == {literal(principal.user_id)}", 'visibility == "public"']
    if principal.group_ids:
        rules.append(f'(visibility == "group" and array_contains_any(group_ids, {literal_list(principal.group_ids)}))')
    return " or ".join(rules)


# ---- structured user filters ----
# public field name → Milvus expression it reads (a whitelist: nothing else is accepted)
FILTER_FIELDS: dict[str, str] = {
    "doc_id": "doc_id",
    "source": "source_uri",
    "source_uri": "source_uri",
    "chunk_index": "chunk_index",
    "owner_id": "owner_id",
    "visibility": "visibility",
    "sensitivity": "sensitivity",
    "source_type": "source_type",
    "group_ids": "group_ids",
    "file_type": 'metadata["file_type"]',
    "language": 'metadata["language"]',
    "title": 'metadata["title"]',
    "table": 'metadata["table"]',
    "database": 'metadata["database"]',
    "pii_types": 'metadata["pii_types"]',
    "compliance_tags": 'metadata["compliance_tags"]',
}
ARRAY_FIELDS = {"group_ids", "pii_types", "compliance_tags"}
# ARRAY-typed columns take array_contains*; lists inside the JSON metadata take json_contains* (the portable
# spelling: Milvus 2.3 has only json_contains* for JSON paths, newer servers and Milvus Lite accept both).
_CONTAINS = {"contains": "contains", "contains_any": "contains_any"}
_COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


@dataclass(frozen=True)
class FilterClause:
    field: str
    op: str = "eq"
    value: Any = None


def parse_filters(raw: Any) -> list[FilterClause]:
    """Accept ``[{field, op, value}, ...]`` or the shorthand ``{field: value}`` (equality)."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        raw = [{"field": k, "op": "eq", "value": v} for k, v in raw.items()]
    if not isinstance(raw, list):
        raise InvalidInput("filters must be a list of {field, op, value} objects", field="filters")
    if len(raw) > MAX_FILTER_CLAUSES:
        raise InvalidInput(f"at most {MAX_FILTER_CLAUSES} filter clauses", field="filters")
    clauses = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "field" not in item:
            raise InvalidInput(f"filters[{i}] must be an object with 'field', 'op', 'value'", field=f"filters[{i}]")
        clauses.append(FilterClause(str(item["field"]), str(item.get("op", "eq")), item.get("value")))
    return clauses


def render_clause(clause: FilterClause) -> str:
    target = FILTER_FIELDS.get(clause.field)
    if target is None:
        allowed = ", ".join(sorted(FILTER_FIELDS))
        raise InvalidInput(f"unknown filter field {clause.field!r} (allowed: {allowed})", field="filters.field")
    op, value = clause.op, clause.value
    if clause.field in ARRAY_FIELDS:
        return _render_contains(clause.field, target, op, value)
    if op in _COMPARE:
        return f"{target} {_COMPARE[op]} {literal(value)}"
    if op in ("in", "not_in"):
        keyword = "in" if op == "in" else "not in"
        return f"{target} {keyword} {literal_list(_as_list(value))}"
    if op == "prefix":
        if not isinstance(value, str):
            raise InvalidInput("op 'prefix' needs a string value", field="filters.value")
        escaped = value.replace("%", "\\%").replace("_", "\\_")
        return f"{target} like {literal(escaped + '%')}"
    raise InvalidInput(f"unknown filter op {op!r}", field="filters.op")


def _render_contains(name: str, target: str, op: str, value: Any) -> str:
    if op not in _CONTAINS:
        raise InvalidInput(f"array field {name!r} takes op 'contains' or 'contains_any'", field="filters.op")
    family = "json" if target.startswith("metadata[") else "array"
    operand = literal(value) if op == "contains" else literal_list(_as_list(value))
    return f"{family}_{_CONTAINS[op]}({target}, {operand})"


def _as_list(value: Any) -> Sequence[Any]:
    if not isinstance(value, list) or not value:
        raise InvalidInput("this op needs a non-empty list value", field="filters.value")
    return value


def user_filter(raw: Any) -> str:
    return and_all(*(render_clause(c) for c in parse_filters(raw)))


def retrieval_filter(principal: Principal, raw_filters: Any = None, policy: GovernancePolicy | None = None) -> str:
    """The one expression every retrieval path uses: access filter AND governance policy AND user filters.

    ``policy`` (``rag_ray.enrich.policy``) narrows the ACL by each chunk's sensitivity label; None: no policy.
    """
    return and_all(access_filter(principal), _policy_filter(principal, policy), user_filter(raw_filters))


def _policy_filter(principal: Principal, policy: GovernancePolicy | None) -> str:
    if policy is None:
        return ""
    from rag_ray.enrich.policy import policy_filter  # lazy: the policy module builds its rules with literal()

    return policy_filter(principal, policy)
