"""RDB sync: introspect → per table snapshot the primary keys, plan key-range partitions against the
manifest → run the read/render → embed → write stages → finalise the manifest and the watermarks.

- A row is a document: ``doc_id`` from (source, table, primary key); its content hash covers the rendered
  text, its metadata and its ACL, so an unchanged row is skipped before embedding.
- ``full``: every row is read; ``incremental``: only rows whose ``incremental_column`` is at or after the
  stored watermark (tables without that column are read in full). In both modes rows deleted from the
  table are found by diffing the primary-key snapshot against the manifest, and their chunks removed.
- The watermark of a table advances only when all its partitions were read.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.engine import Engine

from rag_ray.errors import InvalidInput
from rag_ray.ingest.controls import ControlledStages
from rag_ray.ingest.executor import Executor
from rag_ray.ingest.rdb_stages import KIND_SKIP, EmbedWriteFactories, PartitionTask, RdbStages
from rag_ray.ingest.rows import KIND_CHUNK, KIND_ERROR
from rag_ray.ingest.source_acl import RowAcl
from rag_ray.ingest.tracking import JobStore, JobTracker, ProgressListener, run_tracked
from rag_ray.metadata import DocumentRecord, MetadataDB
from rag_ray.sources.rdb.config import DatabaseConfig
from rag_ray.sources.rdb.dialects import count_rows, max_value, select_keys
from rag_ray.sources.rdb.introspect import TableInfo, _short, inspect_tables
from rag_ray.sources.rdb.reader import ReaderKind, create_source_engine
from rag_ray.sources.rdb.render import SOURCE_TYPE, json_value, row_doc_id, table_prefix
from rag_ray.sources.rdb.state import NamedSource, decode_value, load_states, save_state
from rag_ray.store.filters import MAX_IN_VALUES, literal_list
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl

log = logging.getLogger(__name__)
Mode = Literal["full", "incremental"]
# request fields a named source may store
SOURCE_OPTIONS = ("mode", "include_tables", "exclude_tables", "incremental_column", "batch_size", "max_rows",
                  "validate_data", "content_columns", "metadata_columns", "key_columns", "reader", "owner_column",
                  "group_column")
MAX_BATCH_SIZE = 100_000


@dataclass
class RdbSyncRequest:
    database: DatabaseConfig
    source_name: str = ""  # default: the database URL without password
    mode: Mode = "full"
    include_tables: Sequence[str] = ()
    exclude_tables: Sequence[str] = ()
    incremental_column: str | None = None
    batch_size: int = 1000  # rows per partition (one Ray task) and per read page
    max_rows: int | None = None  # per table: the first max_rows rows by primary key
    validate_data: bool = False
    acl: Acl = field(default_factory=Acl)
    content_columns: dict[str, list[str]] = field(default_factory=dict)  # table → columns of the text
    metadata_columns: dict[str, list[str]] = field(default_factory=dict)  # table → columns copied to metadata
    key_columns: dict[str, list[str]] = field(default_factory=dict)  # table → key for tables without a PK
    reader: ReaderKind = "auto"
    partition_num: int = 1  # connectorx partitions inside one task
    force: bool = False  # re-embed unchanged rows too
    # columns naming a row's owner (user id or username) and groups (ids or names, comma separated): each row's
    # chunks get that ACL in tables having them (rag_ray.ingest.source_acl.RowAcl); None: ``acl`` on every row
    owner_column: str | None = None
    group_column: str | None = None

    @property
    def source(self) -> str:
        return self.source_name or self.database.public_url()

    @classmethod
    def from_source(cls, source: NamedSource, mode: str | None = None) -> RdbSyncRequest:
        """The request a named source stands for (its stored options; ``mode`` overrides)."""
        options = {k: v for k, v in source.options.items() if k in SOURCE_OPTIONS}
        if mode:
            options["mode"] = mode
        return cls(database=source.config, source_name=source.name, acl=source.acl, **options)

    def check(self) -> None:
        if self.mode not in ("full", "incremental"):
            raise InvalidInput("mode must be 'full' or 'incremental'", field="mode")
        if self.mode == "incremental" and not self.incremental_column:
            raise InvalidInput("incremental mode needs incremental_column", field="incremental_column")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise InvalidInput(f"batch_size must be between 1 and {MAX_BATCH_SIZE}", field="batch_size")
        if self.max_rows is not None and self.max_rows < 1:
            raise InvalidInput("max_rows must be at least 1", field="max_rows")

    def describe(self) -> dict[str, Any]:
        """Job parameters as stored in the job record: never the password."""
        return {"source": self.source, "database": self.database.describe(), "mode": self.mode,
                "include_tables": list(self.include_tables), "exclude_tables": list(self.exclude_tables),
                "incremental_column": self.incremental_column, "batch_size": self.batch_size,
                "max_rows": self.max_rows, "validate_data": self.validate_data, "owner_id": self.acl.owner_id,
                "group_ids": list(self.acl.group_ids), "visibility": self.acl.visibility, "force": self.force,
                "owner_column": self.owner_column, "group_column": self.group_column}


@dataclass
class TableSummary:
    table: str
    mode: str
    rows_total: int = 0
    rows_changed: int = 0
    rows_unchanged: int = 0
    rows_deleted: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    errors: int = 0
    watermark: str | None = None


@dataclass
class RdbSyncSummary:
    job_id: str
    status: str
    source: str = ""
    mode: str = "full"
    tables: list[TableSummary] = field(default_factory=list)
    rows_processed: int = 0
    rows_skipped: int = 0
    rows_deleted: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["tables"] = [dict(t.__dict__) for t in self.tables]
        return data


@dataclass
class _TablePlan:
    table: TableInfo
    summary: TableSummary
    tasks: list[PartitionTask]
    deleted: list[str]  # doc ids
    new_watermark: Any = None
    rows_to_read: int = 0


@dataclass
class _DocResult:
    table: str = ""
    ids: set[str] = field(default_factory=set)
    expected: int = 0
    kind: str = KIND_CHUNK
    row_hash: str = ""
    key: dict[str, Any] = field(default_factory=dict)
    uri: str = ""
    acl: Acl | None = None  # what its chunks were stamped with (None: the request's)


@dataclass
class _Results:
    docs: dict[str, _DocResult] = field(default_factory=lambda: defaultdict(_DocResult))
    failed_tables: set[str] = field(default_factory=set)
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class RdbIngestor:
    """Runs RDB syncs with any executor: ``LocalExecutor`` in-process, ``RayDataExecutor`` on Ray."""

    def __init__(self, db: MetadataDB, store: ChunkStore, executor: Executor, base_stages: EmbedWriteFactories, *,
                 chunk_size: int = 800, chunk_overlap: int = 100):
        self.db, self.store, self.executor, self.base_stages = db, store, executor, base_stages
        self.chunk_size, self.chunk_overlap = chunk_size, chunk_overlap
        self.jobs = JobStore(db)

    def submit(self, request: RdbSyncRequest, created_by: str = "system") -> str:
        request.check()
        return self.jobs.create("rdb", request.describe(), created_by=created_by)

    def run(self, request: RdbSyncRequest, job_id: str | None = None,
            listeners: list[ProgressListener] | None = None) -> RdbSyncSummary:
        job_id = job_id or self.submit(request)
        tracker = JobTracker(self.jobs, job_id, listeners)
        summary = RdbSyncSummary(job_id=job_id, status="running", source=request.source, mode=request.mode)

        def work() -> None:
            request.check()
            self._run(request, tracker, summary)

        run_tracked(tracker, summary, work, lambda: _message(summary), describe_error=_short)
        return summary

    def _run(self, request: RdbSyncRequest, tracker: JobTracker, summary: RdbSyncSummary) -> None:
        engine = create_source_engine(request.database)
        try:
            tables = inspect_tables(engine, schema=request.database.schema_name, include=request.include_tables or None,
                                    exclude=request.exclude_tables, row_counts=False)
            plans = [p for t in tables if (p := self._plan_table(engine, request, t, tracker)) is not None]
        finally:
            engine.dispose()
        summary.tables = [p.summary for p in plans]
        tracker.start(sum(p.rows_to_read for p in plans))
        for plan in plans:
            plan.summary.rows_deleted, plan.summary.chunks_deleted = self._delete_docs(plan.deleted)
        summary.rows_deleted = tracker.progress.items_deleted = sum(p.summary.rows_deleted for p in plans)
        summary.chunks_deleted = sum(p.summary.chunks_deleted for p in plans)
        tasks = [t for p in plans for t in p.tasks]
        results = _Results()
        try:
            if tasks:
                self._execute(tasks, self._stages(request), tracker, results)
            tracker.raise_if_ended()  # cancelled or stopped: the stages skipped the rest, the pipeline drained
        except BaseException:
            self._settle(plans, results, request, tracker, summary)
            raise
        finally:
            if tasks:
                self.store.seal_and_warm()
        self._finalise(plans, results, request, tracker, summary)

    def _stages(self, request: RdbSyncRequest) -> RdbStages:
        return RdbStages(request.database, self.base_stages, self.chunk_size, self.chunk_overlap,
                         reader=request.reader, page_size=min(request.batch_size, 10_000),
                         partition_num=request.partition_num,
                         row_acl=RowAcl.build(self.db, request.owner_column, request.group_column))

    # ---- planning ----
    def _plan_table(self, engine: Engine, request: RdbSyncRequest, table: TableInfo,
                    tracker: JobTracker) -> _TablePlan | None:
        table = _with_key(table, request.key_columns.get(table.name))
        if not table.primary_key:
            tracker.error(table_prefix(request.source, table.name),
                          f"table {table.name} has no primary key; give key_columns for it")
            return None
        try:
            return self._plan_keys(engine, request, table)
        except sa.exc.SQLAlchemyError as exc:
            tracker.error(table_prefix(request.source, table.name), f"{type(exc).__name__}: {_short(exc)}")
            return None

    def _plan_keys(self, engine: Engine, request: RdbSyncRequest, table: TableInfo) -> _TablePlan:
        source = request.source
        keys = _snapshot_keys(engine, table, request.max_rows)
        doc_ids = [row_doc_id(source, table.name, dict(zip(table.primary_key, map(json_value, k), strict=True)))
                   for k in keys]
        known = {} if request.force else self._known_hashes(source, table.name)
        present = set(doc_ids)
        deleted = [d for d in known if d not in present] if request.max_rows is None else \
            self._deleted_beyond_cap(engine, table, source, known, present)
        column = _watermark_column(request, table)
        incremental = column is not None and request.mode == "incremental"
        summary = TableSummary(table=table.name, mode="incremental" if incremental else "full")
        watermark, new_value = self._watermarks(engine, source, table, column) if column else (None, None)
        watermark = watermark if incremental else None  # a full sync reads everything but still moves the mark
        rows_to_read = len(keys) if watermark is None else _count(engine, table, watermark, request.max_rows)
        tasks = _partitions(request, table, keys, doc_ids, known, watermark)
        summary.rows_total = len(keys)
        return _TablePlan(table, summary, tasks, deleted, new_value, rows_to_read)

    def _watermarks(self, engine: Engine, source: str, table: TableInfo, column: str
                    ) -> tuple[tuple[str, Any] | None, Any]:
        """(predicate for this sync — None on the first one —, the table's current maximum to store after)."""
        old = load_states(self.db, source).get(table.name)
        old_value = decode_value(old.watermark) if old and old.watermark_column == column else None
        with engine.connect() as conn:
            new_value = conn.execute(max_value(table.ref(), column)).scalar()
        return ((column, old_value) if old_value is not None else None), new_value

    def _deleted_beyond_cap(self, engine: Engine, table: TableInfo, source: str, known: dict[str, str],
                            present: set[str]) -> list[str]:
        """With ``max_rows`` the snapshot is partial: a known row is deleted only if gone from the whole table."""
        everything = {row_doc_id(source, table.name, dict(zip(table.primary_key, map(json_value, k), strict=True)))
                      for k in _snapshot_keys(engine, table, None)}
        return [d for d in known if d not in present and d not in everything]

    def _known_hashes(self, source: str, table: str) -> dict[str, str]:
        prefix = table_prefix(source, table)
        with self.db.session() as s:
            rows = s.execute(select(DocumentRecord.doc_id, DocumentRecord.content_hash)
                             .where(DocumentRecord.source_type == SOURCE_TYPE,
                                    DocumentRecord.source_uri.startswith(prefix, autoescape=True)))
            return {doc_id: digest for doc_id, digest in rows}

    # ---- execution ----
    def _execute(self, tasks: list[PartitionTask], stages: RdbStages, tracker: JobTracker, results: _Results) -> None:
        def on_results(batch: dict[str, list[Any]]) -> None:
            done = chunks = skipped = 0
            for kind, chunk_id, doc_id, uri, n_chunks, error, info_json in zip(
                    batch["kind"], batch["id"], batch["doc_id"], batch["source_uri"], batch["n_chunks"],
                    batch["error"], batch["row_json"], strict=True):
                info = json.loads(info_json or "{}")
                if kind == KIND_SKIP:
                    results.skipped[info["table"]] += int(info["skipped"])
                    skipped += int(info["skipped"])
                    continue
                if kind == KIND_ERROR:
                    _record_error(results, info, uri or doc_id, error, tracker)
                    continue
                doc = _doc(results, doc_id, kind, uri, info)
                if kind == KIND_CHUNK:
                    doc.ids.add(chunk_id)
                    doc.expected = int(n_chunks)
                    chunks += 1
                    done += len(doc.ids) == doc.expected
                else:
                    done += 1
            tracker.progress.items_skipped += skipped
            tracker.completed((), batch_sizes=batch.get("embed_batch_size", ()))
            tracker.add(items=done, chunks=chunks)

        # pause and cancel are obeyed by the stages themselves, before each partition and batch
        self.executor.run([t.to_row() for t in tasks], ControlledStages(stages, tracker.control()), on_results,
                          tracker.flush)

    def _settle(self, plans: list[_TablePlan], results: _Results, request: RdbSyncRequest, tracker: JobTracker,
                summary: RdbSyncSummary) -> None:
        """After a cancel or stop: every row fully written or not at all, and no watermark moves. Rows written in
        full are recorded; a row written in part loses its chunks and its manifest row (the next sync writes it)."""
        try:
            partial = [d for d, r in results.docs.items() if r.kind == KIND_CHUNK and len(r.ids) != r.expected]
            for doc_id in partial:
                results.docs.pop(doc_id)
            results.failed_tables.update(p.table.name for p in plans)
            self._finalise(plans, results, request, tracker, summary)
            self._delete_docs(partial)
        except Exception as exc:  # the job's own ending is what the caller must see
            log.warning("job %s: could not settle partly written rows: %s", tracker.job_id, type(exc).__name__)

    # ---- finalising ----
    def _finalise(self, plans: list[_TablePlan], results: _Results, request: RdbSyncRequest, tracker: JobTracker,
                  summary: RdbSyncSummary) -> None:
        complete = [(d, r) for d, r in results.docs.items() if r.kind != KIND_CHUNK or len(r.ids) == r.expected]
        for r in results.docs.values():
            if r.kind == KIND_CHUNK and len(r.ids) != r.expected:
                tracker.error(r.uri, f"only {len(r.ids)} of {r.expected} chunks were written")
                results.failed_tables.add(r.table)
        stale = self._delete_stale({d: r.ids for d, r in complete})
        self._save_records(complete, request, tracker.job_id)
        by_table = {p.table.name: p for p in plans}
        for doc_id, r in complete:
            table = by_table[r.table].summary
            table.rows_changed += 1
            table.chunks_written += len(r.ids)
            table.chunks_deleted += stale.get(doc_id, 0)
        for plan in plans:
            self._finish_table(plan, results, request, tracker.job_id)
        _totals(summary, plans)

    def _finish_table(self, plan: _TablePlan, results: _Results, request: RdbSyncRequest, job_id: str) -> None:
        name = plan.table.name
        plan.summary.rows_unchanged = results.skipped.get(name, 0)
        plan.summary.errors = results.errors.get(name, 0)
        column = _watermark_column(request, plan.table)
        if name in results.failed_tables or column is None:
            return  # keep the old watermark: the next sync reads the missing partitions again
        save_state(self.db, request.source, name, column=column, watermark=plan.new_watermark,
                   mode=plan.summary.mode, job_id=job_id, rows=plan.summary.rows_total)
        plan.summary.watermark = None if plan.new_watermark is None else str(plan.new_watermark)

    def _delete_stale(self, keep: dict[str, set[str]]) -> dict[str, int]:
        """Chunks of re-written rows that the new version no longer has (e.g. a row got shorter)."""
        stale: dict[str, int] = {}
        doc_ids = list(keep)
        for part in _batches(doc_ids, MAX_IN_VALUES):
            rows = self.store.query(f"doc_id in {literal_list(part)}", ("id", "doc_id"))
            old = [r["id"] for r in rows if r["id"] not in keep[r["doc_id"]]]
            for r in rows:
                if r["id"] not in keep[r["doc_id"]]:
                    stale[r["doc_id"]] = stale.get(r["doc_id"], 0) + 1
            if old:
                self.store.delete_ids(old)
        return stale

    def _delete_docs(self, doc_ids: list[str]) -> tuple[int, int]:
        chunks = 0
        for part in _batches(doc_ids, MAX_IN_VALUES):
            ids = self.store.ids_where(f"doc_id in {literal_list(part)}")
            chunks += self.store.delete_ids(ids)
            with self.db.session() as s:
                s.execute(sa.delete(DocumentRecord).where(DocumentRecord.doc_id.in_(part)))
        return len(doc_ids), chunks

    def _save_records(self, docs: list[tuple[str, _DocResult]], request: RdbSyncRequest, job_id: str) -> None:
        for part in _batches(docs, 500):
            with self.db.session() as s:
                existing = {r.doc_id: r for r in s.scalars(select(DocumentRecord).where(
                    DocumentRecord.doc_id.in_([d for d, _ in part])))}
                for doc_id, r in part:
                    rec = existing.get(doc_id) or DocumentRecord(doc_id=doc_id)
                    rec.source_uri, rec.source_type, rec.file_type = r.uri, SOURCE_TYPE, SOURCE_TYPE
                    rec.source_name, rec.content_hash = request.source[:255], r.row_hash
                    rec.size_bytes, rec.mtime_ns, rec.chunk_count, rec.job_id = 0, 0, len(r.ids), job_id
                    acl = r.acl or request.acl
                    rec.owner_id, rec.group_ids, rec.visibility = acl.owner_id, list(acl.group_ids), acl.visibility
                    rec.metadata_json = {"table": r.table, "primary_key": r.key}
                    s.add(rec)


# ---- helpers ----
def _with_key(table: TableInfo, key_columns: list[str] | None) -> TableInfo:
    if not key_columns:
        return table
    missing = [c for c in key_columns if table.column(c) is None]
    if missing:
        raise InvalidInput(f"key_columns {missing} are not columns of {table.name}", field="key_columns")
    return TableInfo(table.name, table.columns, list(key_columns), table.foreign_keys, table.row_count, table.schema)


def _watermark_column(request: RdbSyncRequest, table: TableInfo) -> str | None:
    """The table's ``incremental_column`` (matched case-insensitively), or None when it has none."""
    wanted = request.incremental_column
    if not wanted:
        return None
    return next((c.name for c in table.columns if c.name.lower() == wanted.lower()), None)


def _snapshot_keys(engine: Engine, table: TableInfo, limit: int | None) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select_keys(table.ref(), table.primary_key, limit))]


def _count(engine: Engine, table: TableInfo, watermark: tuple[str, Any], cap: int | None) -> int:
    with engine.connect() as conn:
        n = int(conn.execute(count_rows(table.ref(), watermark)).scalar_one())
    return min(n, cap) if cap else n


def _partitions(request: RdbSyncRequest, table: TableInfo, keys: list[tuple[Any, ...]], doc_ids: list[str],
                known: dict[str, str], watermark: tuple[str, Any] | None) -> list[PartitionTask]:
    """Consecutive key ranges of ``batch_size`` rows; without a cap the ends are open (rows inserted since
    the snapshot are read too)."""
    size = max(1, request.batch_size)
    n_parts = max(1, math.ceil(len(keys) / size))
    tasks = []
    for i in range(n_parts):
        part_keys, part_ids = keys[i * size:(i + 1) * size], doc_ids[i * size:(i + 1) * size]
        open_lower = i == 0 and request.max_rows is None
        open_upper = i == n_parts - 1 and request.max_rows is None
        tasks.append(PartitionTask(
            source=request.source, database=request.database.display_database(), table=table,
            lower=None if open_lower or not part_keys else part_keys[0],
            upper=None if open_upper or not part_keys else part_keys[-1], watermark=watermark,
            known={d: known[d] for d in part_ids if d in known},
            validate=request.validate_data, content_columns=request.content_columns.get(table.name),
            metadata_columns=request.metadata_columns.get(table.name, []), acl=request.acl, rows=len(part_keys)))
    return tasks


def _doc(results: _Results, doc_id: str, kind: str, uri: str, info: dict[str, Any]) -> _DocResult:
    doc = results.docs[doc_id]
    doc.kind, doc.uri, doc.table = kind, uri, info.get("table", "")
    doc.row_hash, doc.key = info.get("row_hash", ""), info.get("primary_key", {})
    if info.get("acl"):
        owner, groups, visibility = info["acl"]
        doc.acl = Acl(owner, tuple(groups), visibility)
    return doc


def _record_error(results: _Results, info: dict[str, Any], item: str, error: str, tracker: JobTracker) -> None:
    table = info.get("table", "")
    results.errors[table] += 1
    if info.get("partition_error"):
        results.failed_tables.add(table)
    tracker.error(item, error)


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _totals(summary: RdbSyncSummary, plans: list[_TablePlan]) -> None:
    tables = [p.summary for p in plans]
    summary.rows_processed = sum(t.rows_changed for t in tables)
    summary.rows_skipped = sum(t.rows_unchanged for t in tables)
    summary.chunks_written = sum(t.chunks_written for t in tables)
    summary.chunks_deleted = sum(t.chunks_deleted for t in tables)


def _message(summary: RdbSyncSummary) -> str:
    return (f"{summary.rows_processed} rows ingested ({summary.chunks_written} chunks), {summary.rows_skipped} "
            f"unchanged, {summary.rows_deleted} removed from {len(summary.tables)} tables, "
            f"{len(summary.errors)} errors")


__all__ = ["Mode", "RdbIngestor", "RdbSyncRequest", "RdbSyncSummary", "TableSummary"]
