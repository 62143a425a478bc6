"""Reading rows: connectorx (Arrow, partitioned on the integer key) where it supports the database,
SQLAlchemy keyset pages otherwise — and whenever connectorx fails on a query (it is strict about types)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from rag_ray.errors import InvalidInput, SourceError
from rag_ray.sources.rdb.config import DatabaseConfig, driver_missing, require_driver
from rag_ray.sources.rdb.dialects import compile_sql, select_rows
from rag_ray.sources.rdb.introspect import TableInfo, _short

ReaderKind = Literal["auto", "connectorx", "sqlalchemy"]
Row = dict[str, Any]
log = logging.getLogger(__name__)


def create_source_engine(config: DatabaseConfig) -> Engine:
    """An engine on the source database (no pool kept: jobs open few, short-lived connections). It dials the
    config's checked address when it has one, and gives up connecting after the config's connect timeout."""
    if config.kind == "sqlite":
        path = config.sqlalchemy_url().database or ""
        if path != ":memory:" and not Path(path).is_file():
            raise InvalidInput(f"sqlite database {path!r} does not exist", field="database")
    require_driver(config.kind)
    try:
        return sa.create_engine(config.engine_url(), poolclass=NullPool, connect_args=config.connect_args())
    except (ModuleNotFoundError, sa.exc.NoSuchModuleError) as exc:  # installed, but broken
        raise driver_missing(config.kind) from exc


@dataclass(frozen=True)
class ReadSpec:
    """One slice of a table: an inclusive key range, optionally rows at/after a watermark."""

    table: TableInfo
    lower: tuple[Any, ...] | None = None
    upper: tuple[Any, ...] | None = None
    watermark: tuple[str, Any] | None = None
    limit: int | None = None

    def select(self, *, after: Sequence[Any] | None = None, limit: int | None = None) -> sa.Select[Any]:
        t = self.table
        return select_rows(t.ref(), t.column_names, t.primary_key, lower=self.lower, upper=self.upper,
                           after=after, watermark=self.watermark, limit=limit)


def keyset_pages(engine: Engine, spec: ReadSpec, page_size: int) -> Iterator[list[Row]]:
    """SQLAlchemy reads, one keyset page (``key > last``) at a time: constant memory, restartable."""
    after: tuple[Any, ...] | None = None
    remaining = spec.limit
    key = spec.table.primary_key
    while remaining is None or remaining > 0:
        size = page_size if remaining is None else min(page_size, remaining)
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(spec.select(after=after, limit=size)).mappings()]
        if rows:
            yield rows
        if len(rows) < size:
            return
        after = tuple(rows[-1][c] for c in key)
        remaining = None if remaining is None else remaining - len(rows)


def stream_rows(engine: Engine, stmt: sa.Select[Any], page_size: int) -> Iterator[list[Row]]:
    """SQLAlchemy server-side streaming (``yield_per``) of one query, in pages."""
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=page_size).execute(stmt).mappings()
        for part in result.partitions(page_size):
            yield [dict(r) for r in part]


def connectorx_rows(url: str, sql: str, *, partition_on: str | None = None, partition_num: int = 1) -> list[Row]:
    """One query through connectorx into Arrow, split into ``partition_num`` ranges of ``partition_on``."""
    import connectorx as cx

    kwargs: dict[str, Any] = {}
    if partition_on and partition_num > 1:
        kwargs = {"partition_on": partition_on, "partition_num": partition_num}
    table = cx.read_sql(url, sql, return_type="arrow", **kwargs)
    return table.to_pylist()


def connectorx_sql(config: DatabaseConfig, spec: ReadSpec) -> str | None:
    """The spec as literal SQL for connectorx, or None when connectorx cannot read it."""
    if config.connectorx_url() is None:
        return None
    stmt = spec.select(limit=spec.limit)
    try:
        return compile_sql(stmt, config.kind, literal=True)
    except sa.exc.CompileError:
        return None  # a watermark value without a literal form: let SQLAlchemy bind it


def read_rows(config: DatabaseConfig, engine: Engine, spec: ReadSpec, *, page_size: int,
              reader: ReaderKind = "auto", partition_num: int = 1) -> Iterator[list[Row]]:
    """Rows of ``spec`` in pages, via connectorx when possible (falling back to SQLAlchemy on failure)."""
    if reader != "sqlalchemy":
        rows = _try_connectorx(config, spec, partition_num, strict=reader == "connectorx")
        if rows is not None:
            for start in range(0, len(rows), page_size):
                yield rows[start:start + page_size]
            return
    try:
        yield from keyset_pages(engine, spec, page_size)
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"reading {spec.table.name} failed: {type(exc).__name__}: {_short(exc)}") from exc


def _try_connectorx(config: DatabaseConfig, spec: ReadSpec, partition_num: int, *, strict: bool) -> list[Row] | None:
    url, sql = config.connectorx_url(), connectorx_sql(config, spec)
    if url is None or sql is None:
        if strict:
            raise InvalidInput(f"connectorx cannot read {config.kind} here", field="reader")
        return None
    try:
        return connectorx_rows(url, sql, partition_on=spec.table.integer_key, partition_num=partition_num)
    except Exception as exc:  # connectorx raises plain RuntimeErrors on type surprises
        if strict:
            raise SourceError(f"connectorx could not read {spec.table.name}: {_short(exc)}") from exc
        log.info("connectorx failed on %s (%s); reading with SQLAlchemy", spec.table.name, type(exc).__name__)
        return None
