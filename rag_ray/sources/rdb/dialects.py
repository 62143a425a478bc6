"""Dialect-specific SQL, built only with SQLAlchemy Core (never string formatting of names or values).

Keyset pagination on the primary key (``(a > x) or (a = x and b > y)`` — portable to SQL Server and
Oracle, which lack row-value comparison), inclusive key ranges for partitions, watermark predicates,
counts and maxima. Columns are untyped (``NullType``): values round-trip exactly as the driver returns them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ColumnElement, Select, TableClause

from rag_ray.errors import InvalidInput

_DIALECT_MODULES = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite",
                    "oracle": "oracle", "mssql": "mssql"}


def dialect_for(kind: str) -> Dialect:
    """A SQLAlchemy dialect object for compiling (no driver needed)."""
    import importlib

    module_name = _DIALECT_MODULES.get(kind)
    if module_name is None:
        raise InvalidInput(f"no SQL dialect for database type {kind!r}", field="database_type")
    module = importlib.import_module(f"sqlalchemy.dialects.{module_name}")
    dialect: Dialect = module.dialect()
    if kind == "mariadb":
        dialect.is_mariadb = True  # type: ignore[attr-defined]
    return dialect


def table_ref(name: str, columns: Sequence[str], schema: str | None = None) -> TableClause:
    return sa.table(name, *[sa.column(c) for c in columns], schema=schema)


def quote_identifier(kind: str, name: str) -> str:
    """How ``name`` is spelled in this dialect's SQL (quoted only when needed)."""
    return dialect_for(kind).identifier_preparer.quote(name)


def _cols(table: TableClause, names: Sequence[str]) -> list[ColumnElement[Any]]:
    return [table.c[n] for n in names]


def keyset_after(cols: Sequence[ColumnElement[Any]], values: Sequence[Any], *, inclusive: bool = False
                 ) -> ColumnElement[bool]:
    """Rows whose key sorts after ``values`` (or equal to it when ``inclusive``)."""
    return _keyset(cols, values, after=True, inclusive=inclusive)


def keyset_before(cols: Sequence[ColumnElement[Any]], values: Sequence[Any], *, inclusive: bool = False
                  ) -> ColumnElement[bool]:
    return _keyset(cols, values, after=False, inclusive=inclusive)


def _keyset(cols: Sequence[ColumnElement[Any]], values: Sequence[Any], *, after: bool, inclusive: bool
            ) -> ColumnElement[bool]:
    """``(a > x) or (a = x and b > y)`` …; the last comparison is ``>=`` when ``inclusive``."""
    if len(cols) != len(values) or not cols:
        raise InvalidInput("key values do not match the key columns", field="primary_key")
    branches = []
    for i, col in enumerate(cols):
        last = i == len(cols) - 1
        tail = _compare(col, values[i], after=after, or_equal=last and inclusive)
        equal_prefix = [c == v for c, v in zip(cols[:i], values[:i], strict=True)]
        branches.append(sa.and_(*equal_prefix, tail) if equal_prefix else tail)
    return sa.or_(*branches) if len(branches) > 1 else branches[0]


def _compare(col: ColumnElement[Any], value: Any, *, after: bool, or_equal: bool) -> ColumnElement[bool]:
    if after:
        return col >= value if or_equal else col > value
    return col <= value if or_equal else col < value


def watermark_predicate(table: TableClause, column: str, value: Any) -> ColumnElement[bool]:
    """Rows changed at or after the last watermark (``>=``: a row written in the same instant as the
    previous maximum is read again — harmless, its content hash is unchanged)."""
    return table.c[column] >= value


def select_rows(table: TableClause, columns: Sequence[str], key: Sequence[str], *,
                lower: Sequence[Any] | None = None, upper: Sequence[Any] | None = None,
                after: Sequence[Any] | None = None, watermark: tuple[str, Any] | None = None,
                limit: int | None = None) -> Select[Any]:
    """Rows in key order within an inclusive key range, after a keyset cursor, newer than a watermark."""
    key_cols = _cols(table, key)
    stmt = sa.select(*_cols(table, columns)).select_from(table)
    if lower is not None:
        stmt = stmt.where(keyset_after(key_cols, lower, inclusive=True))
    if upper is not None:
        stmt = stmt.where(keyset_before(key_cols, upper, inclusive=True))
    if after is not None:
        stmt = stmt.where(keyset_after(key_cols, after))
    if watermark is not None:
        stmt = stmt.where(watermark_predicate(table, *watermark))
    stmt = stmt.order_by(*key_cols)
    return stmt.limit(limit) if limit is not None else stmt


def select_keys(table: TableClause, key: Sequence[str], limit: int | None = None) -> Select[Any]:
    stmt = sa.select(*_cols(table, key)).select_from(table).order_by(*_cols(table, key))
    return stmt.limit(limit) if limit is not None else stmt


def count_rows(table: TableClause, watermark: tuple[str, Any] | None = None) -> Select[Any]:
    stmt = sa.select(sa.func.count()).select_from(table)
    return stmt.where(watermark_predicate(table, *watermark)) if watermark is not None else stmt


def max_value(table: TableClause, column: str) -> Select[Any]:
    return sa.select(sa.func.max(table.c[column])).select_from(table)


def compile_sql(stmt: Select[Any], kind: str, *, literal: bool = True) -> str:
    """SQL text for ``kind``; with ``literal`` the values are inlined (for connectorx, which takes text)."""
    compiled = stmt.compile(dialect=dialect_for(kind), compile_kwargs={"literal_binds": literal})
    return str(compiled)
