"""Schema introspection with ``sqlalchemy.inspect``: tables, columns and types, keys, row counts."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from rag_ray.errors import InvalidInput, SourceError
from rag_ray.sources.rdb.dialects import count_rows, table_ref

# python type → the category validation and rendering use
_CATEGORIES: list[tuple[type, str]] = [(bool, "bool"), (int, "int"), (float, "float"), (decimal.Decimal, "decimal"),
                                       (str, "str"), (bytes, "bytes"), (dt.datetime, "datetime"), (dt.date, "date"),
                                       (dt.time, "time")]


@dataclass
class ColumnInfo:
    name: str
    type: str
    category: str  # int | float | decimal | str | bytes | bool | datetime | date | time | other
    nullable: bool = True
    max_length: int | None = None


@dataclass
class TableInfo:
    name: str
    columns: list[ColumnInfo]
    primary_key: list[str]
    foreign_keys: list[dict[str, Any]] = field(default_factory=list)
    row_count: int | None = None
    schema: str | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnInfo | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def integer_key(self) -> str | None:
        """The single integer primary-key column (what connectorx can partition on), if any."""
        if len(self.primary_key) != 1:
            return None
        col = self.column(self.primary_key[0])
        return col.name if col is not None and col.category == "int" else None

    def ref(self) -> sa.TableClause:
        return table_ref(self.name, self.column_names, self.schema)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableInfo:
        cols = [ColumnInfo(**c) for c in data["columns"]]
        return cls(name=data["name"], columns=cols, primary_key=list(data["primary_key"]),
                   foreign_keys=list(data.get("foreign_keys", [])), row_count=data.get("row_count"),
                   schema=data.get("schema"))


def category_of(type_: sa.types.TypeEngine[Any]) -> str:
    try:
        python_type = type_.python_type
    except (NotImplementedError, AttributeError):
        return "other"
    for cls, name in _CATEGORIES:
        if issubclass(python_type, cls):
            return name
    return "other"


def select_table_names(available: Sequence[str], include: Sequence[str] | None = None,
                       exclude: Sequence[str] = ()) -> list[str]:
    """``include`` (exact, else case-insensitive) minus ``exclude``; an unknown include is an error."""
    by_lower = {name.lower(): name for name in available}
    chosen = list(available) if not include else [_resolve(n, available, by_lower) for n in include]
    excluded = {n.lower() for n in exclude}
    return [n for n in dict.fromkeys(chosen) if n.lower() not in excluded]


def _resolve(name: str, available: Sequence[str], by_lower: dict[str, str]) -> str:
    if name in available:
        return name
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    raise InvalidInput(f"table {name!r} does not exist (tables: {', '.join(sorted(available)) or 'none'})",
                       field="include_tables")


def inspect_tables(engine: Engine, *, schema: str | None = None, include: Sequence[str] | None = None,
                   exclude: Sequence[str] = (), row_counts: bool = True) -> list[TableInfo]:
    try:
        inspector = sa.inspect(engine)
        names = select_table_names(inspector.get_table_names(schema=schema), include, exclude)
        tables = [_table_info(inspector, name, schema) for name in names]
        if row_counts:
            with engine.connect() as conn:
                for table in tables:
                    table.row_count = int(conn.execute(count_rows(table.ref())).scalar_one())
        return tables
    except InvalidInput:
        raise
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cannot inspect the database: {type(exc).__name__}: {_short(exc)}") from exc


def _table_info(inspector: sa.Inspector, name: str, schema: str | None) -> TableInfo:
    columns = [ColumnInfo(name=c["name"], type=str(c["type"]), category=category_of(c["type"]),
                          nullable=bool(c.get("nullable", True)), max_length=getattr(c["type"], "length", None))
               for c in inspector.get_columns(name, schema=schema)]
    pk = list(inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") or [])
    fks = [{"columns": fk["constrained_columns"], "referred_table": fk["referred_table"],
            "referred_columns": fk["referred_columns"]} for fk in inspector.get_foreign_keys(name, schema=schema)]
    return TableInfo(name=name, columns=columns, primary_key=pk, foreign_keys=fks, schema=schema)


def _short(exc: BaseException) -> str:
    """The first line of a driver error, without the SQL and parameters SQLAlchemy appends."""
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:500] if text else type(exc).__name__
