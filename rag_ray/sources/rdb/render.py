"""Row → document text, provenance metadata and deterministic ids.

Values are formatted the same way whichever reader produced them (connectorx Arrow or SQLAlchemy), so a
row's content hash — and with it its chunk ids — do not depend on the reader.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from rag_ray.types import Acl, make_doc_id

SOURCE_TYPE = "rdb"
MAX_VALUE_CHARS = 20_000


@dataclass(frozen=True)
class RenderOptions:
    """Which columns become the text (None: all) and which are copied into chunk metadata."""

    content_columns: tuple[str, ...] | None = None
    metadata_columns: tuple[str, ...] = ()


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, decimal.Decimal):
        return _format_decimal(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="microseconds" if value.microsecond else "seconds")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    return str(value)[:MAX_VALUE_CHARS]


def _format_decimal(value: decimal.Decimal) -> str:
    if not value.is_finite():
        return str(value)
    text = format(value.normalize(), "f")
    return text


def json_value(value: Any) -> Any:
    """A JSON-safe form of a key or metadata value."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    return format_value(value)


def row_key(key_columns: Sequence[str], row: Mapping[str, Any]) -> dict[str, Any]:
    return {c: json_value(row[c]) for c in key_columns}


def row_source_uri(source: str, table: str, key: Mapping[str, Any]) -> str:
    """``rdb://<source>/<table>/<col>=<value>,…`` — stable for the same row of the same source."""
    parts = ",".join(f"{quote(str(c), safe='')}={quote(format_value(v), safe='')}" for c, v in key.items())
    return f"{table_prefix(source, table)}{parts}"


def table_prefix(source: str, table: str) -> str:
    return f"rdb://{quote(source, safe='')}/{quote(table, safe='')}/"


def row_doc_id(source: str, table: str, key: Mapping[str, Any]) -> str:
    return make_doc_id(row_source_uri(source, table, key))


def render_row(table: str, row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """``table: X`` then one ``column: value`` line per non-null column; empty when every column is null."""
    lines = [f"{c}: {format_value(row[c])}" for c in columns if row.get(c) is not None and format_value(row[c])]
    return "\n".join([f"table: {table}", *lines]) if lines else ""


def row_metadata(*, source: str, database: str, table: str, key: Mapping[str, Any], row: Mapping[str, Any],
                 metadata_columns: Sequence[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"source_type": SOURCE_TYPE, "source_name": source, "database": database,
                            "table": table, "primary_key": dict(key)}
    if metadata_columns:
        meta["columns"] = {c: json_value(row.get(c)) for c in metadata_columns}
    return meta


def row_hash(text: str, metadata: Mapping[str, Any], acl: Acl) -> str:
    """What decides whether a row changed: its text, its metadata and who may read it."""
    payload = json.dumps([text, metadata, acl.owner_id, list(acl.group_ids), acl.visibility], sort_keys=True,
                         default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
