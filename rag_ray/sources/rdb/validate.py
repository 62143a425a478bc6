"""Row type checks for ``validate_data``: a failing row becomes a job error; the job goes on."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping, Sequence
from typing import Any

from rag_ray.sources.rdb.introspect import ColumnInfo

_NUMBER = (int, float, decimal.Decimal)
_ACCEPTS: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": _NUMBER, "decimal": _NUMBER, "str": (str,), "bytes": (bytes, bytearray, memoryview),
    "bool": (bool, int), "datetime": (dt.datetime, str), "date": (dt.date, str), "time": (dt.time, str),
}
_ISO_PARSERS = {"datetime": dt.datetime.fromisoformat, "date": dt.date.fromisoformat, "time": dt.time.fromisoformat}


def check_value(column: ColumnInfo, value: Any) -> str | None:
    """Why ``value`` does not fit ``column``, or None when it does."""
    if value is None:
        return None if column.nullable else f"{column.name}: NULL in a NOT NULL column"
    accepted = _ACCEPTS.get(column.category)
    if accepted is None:
        return None
    if column.category == "int" and isinstance(value, float) and value.is_integer():
        return None  # Arrow readers widen nullable integer columns to float
    if not isinstance(value, accepted) or (column.category == "int" and isinstance(value, bool)):
        return f"{column.name}: expected {column.category} ({column.type}), got {type(value).__name__} {value!r:.60}"
    if isinstance(value, str):
        return _check_text(column, value)
    return None


def _check_text(column: ColumnInfo, value: str) -> str | None:
    parse = _ISO_PARSERS.get(column.category)
    if parse is not None:
        try:
            parse(value)
        except ValueError:
            return f"{column.name}: {value!r:.60} is not a valid {column.category}"
    elif column.max_length and len(value) > column.max_length:
        return f"{column.name}: {len(value)} characters, longer than {column.type}"
    return None


def validate_row(columns: Sequence[ColumnInfo], row: Mapping[str, Any]) -> list[str]:
    problems = (check_value(c, row.get(c.name)) for c in columns if c.name in row)
    return [p for p in problems if p]
