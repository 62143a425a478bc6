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
from typing import Any, Literal

from rag_ray.errors import InvalidInput
from rag_ray.types import Principal

MAX_FILTER_CLAUSES = 16
MAX_IN_VALUES = 256
MAX_LITERAL_CHARS = 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_ESCAPES = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON escapes can carry them; they cannot be sent as UTF-8


def literal(value: Any) -> str:
    """Render one Python value as a Milvus literal; strings are double-quoted and escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidInput("filter integers must fit in 64 bits", field="filters.value")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput("filter values must be finite numbers", field="filters.value")
        return repr(value)
    if isinstance(value, str):
        problem = _string_problem(value, MAX_LITERAL_CHARS)
        if problem:
            raise InvalidInput(f"filter values {problem}", field="filters.value")
        return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'
    raise InvalidInput(f"unsupported filter value type {type(value).__name__}", field="filters.value")


def _string_problem(value: str, max_chars: int) -> str:
    """Why ``value`` cannot be a filter string ("" when it can)."""
    if len(value) > max_chars:
        return f"may not be longer than {max_chars} characters"
    if _CONTROL.search(value):
        return "may not contain control characters"
    if _SURROGATE.search(value):
        return "must be valid Unicode (no lone surrogates)"
    return ""


def literal_list(values: Iterable[Any]) -> str:
    items = _bounded(values)
    return "[" + ", ".join(literal(v) for v in items) + "]"


def _bounded(values: Iterable[Any]) -> list[Any]:
    items = list(values)
    if len(items) > MAX_IN_VALUES:
        raise InvalidInput(f"at most {MAX_IN_VALUES} values in one filter", field="filters.value")
    return items


def and_all(*exprs: str | None) -> str:
    """AND together the non-empty expressions, each parenthesised so none can widen another."""
    parts = [f"({e})" for e in exprs if e]
    return " and ".join(parts)


GROUP_KEY_FIELD = "group_key"


def group_key(group_ids: Iterable[str]) -> str:
    """A chunk's groups as one string Milvus matches cheaply: ``|<hex id>|<hex id>|`` (``""`` for none).

    Milvus Lite cannot index an ARRAY field and scans ``array_contains_any`` at ~50 µs a row; ``like`` over a
    VARCHAR costs ~1.5 µs. Hex keeps ids free of LIKE wildcards (``%``, ``_``) and of the separator, so no id
    needs escaping and none can match another id's pattern.
    """
    tokens = [_hex(g) for g in group_ids]
    return f"|{'|'.join(tokens)}|" if tokens else ""


def _hex(group_id: str) -> str:
    return group_id.encode("utf-8", "surrogatepass").hex()


def _group_token(group_id: str) -> str:
    """``group_id`` as it appears in ``group_key``, after the checks every filter value gets."""
    problem = _string_problem(group_id, MAX_LITERAL_CHARS)
    if problem:
        raise InvalidInput(f"filter values {problem}", field="filters.value")
    return _hex(group_id)


def in_any_group(group_ids: Sequence[str], *, keyed: bool = True) -> str:
    """The chunk is shared with one of ``group_ids``: over ``group_key`` (collections that have it), else over the
    ``group_ids`` array (collections from before it, and Milvus 2.3, whose ``like`` only matches prefixes)."""
    if not keyed:
        return f"array_contains_any(group_ids, {literal_list(group_ids)})"
    return "(" + " or ".join(f'{GROUP_KEY_FIELD} like "%|{_group_token(g)}|%"' for g in _bounded(group_ids)) + ")"


def access_filter(principal: Principal, *, keyed_groups: bool = True) -> str:
    """What ``principal`` may read: own chunks, public ones, and group chunks of their groups.

    Admins get an empty filter (everything). This is the only place the ACL expression is built.
    ``keyed_groups``: the collection has ``group_key`` (see :func:`in_any_group`).
    """
    if principal.is_admin:
        return ""
    rules = [f"owner_id == {literal(principal.user_id)}", 'visibility == "public"']
    if principal.group_ids:
        rules.append(f'(visibility == "group" and {in_any_group(principal.group_ids, keyed=keyed_groups)})')
    return " or ".join(rules)


# ---- structured user filters ----
FieldKind = Literal["string", "int", "strings"]
_COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_LIST_OPS = frozenset({"in", "not_in", "contains_any"})  # ops whose value is a non-empty list
OPS: dict[FieldKind, frozenset[str]] = {
    "string": frozenset({*_COMPARE, "in", "not_in", "prefix"}),
    "int": frozenset({*_COMPARE, "in", "not_in"}),
    "strings": frozenset({"contains", "contains_any"}),
}
_KIND_NAMES: dict[FieldKind, str] = {"string": "a string", "int": "a 64-bit integer", "strings": "a list of strings"}


@dataclass(frozen=True)
class FilterField:
    """One field a caller may filter on: the Milvus expression it reads and the values it takes."""

    target: str
    kind: FieldKind = "string"
    max_chars: int = MAX_LITERAL_CHARS  # per string (list fields: per element); the column sizes in store.milvus


# public field name → what it reads (a whitelist: nothing else is accepted)
FILTER_FIELDS: dict[str, FilterField] = {
    "doc_id": FilterField("doc_id", max_chars=64),
    "source": FilterField("source_uri"),
    "source_uri": FilterField("source_uri"),
    "chunk_index": FilterField("chunk_index", "int"),
    "owner_id": FilterField("owner_id", max_chars=128),
    "visibility": FilterField("visibility", max_chars=16),
    "sensitivity": FilterField("sensitivity", max_chars=16),
    "source_type": FilterField("source_type", max_chars=32),
    "group_ids": FilterField("group_ids", "strings", max_chars=128),
    "file_type": FilterField('metadata["file_type"]'),
    "language": FilterField('metadata["language"]'),
    "title": FilterField('metadata["title"]'),
    "table": FilterField('metadata["table"]'),
    "database": FilterField('metadata["database"]'),
    "pii_types": FilterField('metadata["pii_types"]', "strings"),
    "compliance_tags": FilterField('metadata["compliance_tags"]', "strings"),
}
ARRAY_FIELDS = frozenset(name for name, spec in FILTER_FIELDS.items() if spec.kind == "strings")


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
        if not isinstance(item, dict) or not isinstance(item.get("field"), str) or not isinstance(
                item.get("op", "eq"), str):
            raise InvalidInput(f"filters[{i}] must be an object with a string 'field' and 'op', and a 'value'",
                               field=f"filters[{i}]")
        clauses.append(FilterClause(item["field"], item.get("op", "eq"), item.get("value")))
    return clauses


def check_clause(clause: FilterClause) -> FilterField:
    """Validate ``clause`` against its field's type before any expression exists; errors name the field."""
    spec = FILTER_FIELDS.get(clause.field)
    if spec is None:
        allowed = ", ".join(sorted(FILTER_FIELDS))
        raise InvalidInput(f"unknown filter field {clause.field[:64]!r} (allowed: {allowed})", field="filters.field")
    where = f"filters.{clause.field}"
    ops = OPS[spec.kind]
    if clause.op not in ops:
        raise InvalidInput(f"filter field {clause.field!r} ({_KIND_NAMES[spec.kind]}) takes op "
                           f"{', '.join(sorted(ops))}; not {clause.op[:32]!r}", field=where)
    if clause.op in _LIST_OPS:
        if not isinstance(clause.value, list) or not clause.value:
            raise InvalidInput(f"op {clause.op!r} needs a non-empty list value", field=where)
        if len(clause.value) > MAX_IN_VALUES:
            raise InvalidInput(f"at most {MAX_IN_VALUES} values in one filter", field=where)
        for item in clause.value:
            _check_value(spec, item, where)
    else:
        _check_value(spec, clause.value, where)
    return spec


def _check_value(spec: FilterField, value: Any, where: str) -> None:
    """One scalar: an int64 for int fields, a bounded, printable, valid-Unicode string otherwise."""
    if spec.kind == "int":
        if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:  # bool is an int subclass: refused
            raise InvalidInput(f"{where} takes a 64-bit integer (from {INT64_MIN} to {INT64_MAX}), "
                               f"not {_describe(value)}", field=where)
        return
    if not isinstance(value, str):
        raise InvalidInput(f"{where} takes a string{' per element' if spec.kind == 'strings' else ''}, "
                           f"not {_describe(value)}", field=where)
    problem = _string_problem(value, spec.max_chars)
    if problem:
        raise InvalidInput(f"{where} values {problem}", field=where)


def _describe(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return "an integer out of range"
    return {bool: "a boolean", float: "a number", str: "a string", list: "a list", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)


def render_clause(clause: FilterClause) -> str:
    spec = check_clause(clause)
    target, op, value = spec.target, clause.op, clause.value
    if op in _COMPARE:
        return f"{target} {_COMPARE[op]} {literal(value)}"
    if op in ("in", "not_in"):
        return _render_in(target, op == "in", value)
    if op == "prefix":
        escaped = value.replace("%", "\\%").replace("_", "\\_")
        return f"{target} like {literal(escaped + '%')}"
    # ARRAY-typed columns take array_contains*; lists inside the JSON metadata take json_contains* (the portable
    # spelling: Milvus 2.3 has only json_contains* for JSON paths, newer servers and Milvus Lite accept both).
    family = "json" if target.startswith("metadata[") else "array"
    operand = literal(value) if op == "contains" else literal_list(value)
    return f"{family}_{op}({target}, {operand})"


def _render_in(target: str, inside: bool, values: list[Any]) -> str:
    """``target in [...]``; on a JSON path (Milvus Lite takes ``in`` only on a column) the same test as a
    parenthesised OR of equalities (``not_in``: AND of inequalities)."""
    if not target.startswith("metadata["):
        return f"{target} {'in' if inside else 'not in'} {literal_list(values)}"
    literal_list(values)  # the same bound on the number of values
    joiner, compare = (" or ", "==") if inside else (" and ", "!=")
    return "(" + joiner.join(f"{target} {compare} {literal(v)}" for v in values) + ")"


def user_filter(raw: Any) -> str:
    return and_all(*(render_clause(c) for c in parse_filters(raw)))
