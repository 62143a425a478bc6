"""RDB ingest stages: read one key-range partition → render rows → chunk (skipping unchanged rows), and a
writer that reports each row's hash, key and ACL back to the driver. Embedding reuses ``EmbedChunks``. With owner /
group columns (``RowAcl``) each row's chunks carry the ACL its columns name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from rag_ray.errors import RagError
from rag_ray.ingest.executor import EXPECTED_CHUNKS, SharedModel
from rag_ray.ingest.rows import KIND_CHUNK, KIND_EMPTY, KIND_ERROR, chunk_row, marker_row
from rag_ray.ingest.source_acl import RowAcl
from rag_ray.ingest.stages import EmbedChunks, EnrichChunks, ParseAndChunk, WriteChunks, chunk_document
from rag_ray.sources.rdb.config import DatabaseConfig
from rag_ray.sources.rdb.introspect import TableInfo
from rag_ray.sources.rdb.reader import ReaderKind, ReadSpec, create_source_engine, read_rows
from rag_ray.sources.rdb.render import (
    render_row,
    row_hash,
    row_key,
    row_metadata,
    row_source_uri,
    table_prefix,
)
from rag_ray.sources.rdb.state import decode_value, encode_value
from rag_ray.sources.rdb.validate import validate_row
from rag_ray.types import Acl, ParsedDocument, make_doc_id

KIND_SKIP = "skip"  # one row per partition counting its unchanged rows
ROW_INFO_KEYS = ("table", "primary_key", "row_hash", "skipped", "partition_error")


@dataclass
class PartitionTask:
    """One unit of parallel work: a key range of one table (travels as JSON in a Ray Data row)."""

    source: str
    database: str
    table: TableInfo
    lower: tuple[Any, ...] | None = None
    upper: tuple[Any, ...] | None = None
    watermark: tuple[str, Any] | None = None
    limit: int | None = None
    known: dict[str, str] = field(default_factory=dict)  # doc_id → row hash already in the store
    validate: bool = False
    content_columns: list[str] | None = None
    metadata_columns: list[str] = field(default_factory=list)
    acl: Acl = field(default_factory=Acl)
    rows: int = 0  # in its key range when the sync was planned (not carried to the workers)

    def to_row(self) -> dict[str, Any]:
        data = {"source": self.source, "database": self.database, "table": self.table.to_dict(),
                "lower": _enc_key(self.lower), "upper": _enc_key(self.upper), "limit": self.limit,
                "watermark": None if self.watermark is None else [self.watermark[0], encode_value(self.watermark[1])],
                "known": self.known, "validate": self.validate, "content_columns": self.content_columns,
                "metadata_columns": self.metadata_columns,
                "acl": [self.acl.owner_id, list(self.acl.group_ids), self.acl.visibility]}
        # rows the store already holds are skipped when unchanged: a re-sync of a quiet table embeds next to nothing
        return {"task_json": json.dumps(data, default=str), EXPECTED_CHUNKS: max(0, self.rows - len(self.known))}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PartitionTask:
        d = json.loads(row["task_json"])
        wm = d["watermark"]
        owner, groups, visibility = d["acl"]
        return cls(source=d["source"], database=d["database"], table=TableInfo.from_dict(d["table"]),
                   lower=_dec_key(d["lower"]), upper=_dec_key(d["upper"]), limit=d["limit"],
                   watermark=None if wm is None else (wm[0], decode_value(wm[1])), known=d["known"],
                   validate=d["validate"], content_columns=d["content_columns"],
                   metadata_columns=d["metadata_columns"], acl=Acl(owner, tuple(groups), visibility))

    def spec(self) -> ReadSpec:
        return ReadSpec(self.table, lower=self.lower, upper=self.upper, watermark=self.watermark, limit=self.limit)

    def describe(self) -> str:
        bounds = f"[{_show(self.lower)} .. {_show(self.upper)}]"
        return f"{table_prefix(self.source, self.table.name)}{bounds}"


def _enc_key(key: tuple[Any, ...] | None) -> list[str | None] | None:
    return None if key is None else [encode_value(v) for v in key]


def _dec_key(data: list[str | None] | None) -> tuple[Any, ...] | None:
    return None if data is None else tuple(decode_value(v) for v in data)


def _show(key: tuple[Any, ...] | None) -> str:
    return "" if key is None else ",".join(str(v) for v in key)


class ReadRenderChunk(ParseAndChunk):
    """Partition task → chunk rows for new/changed rows, markers for empty/invalid rows, one skip counter."""

    def __init__(self, config: DatabaseConfig, chunk_size: int, chunk_overlap: int, *, reader: ReaderKind = "auto",
                 page_size: int = 1000, partition_num: int = 1, row_acl: RowAcl | None = None):
        super().__init__(chunk_size, chunk_overlap)
        self.config, self.reader, self.page_size, self.partition_num = config, reader, page_size, partition_num
        self.row_acl = row_acl
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_source_engine(self.config)
        return self._engine

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        task = PartitionTask.from_row(row)
        try:
            return list(self._rows(task))
        except RagError as exc:
            return [self._partition_error(task, exc.message)]
        except Exception as exc:  # a driver error must fail this partition only, not the job
            return [self._partition_error(task, f"{type(exc).__name__}: {str(exc).splitlines()[0][:500]}")]

    def _rows(self, task: PartitionTask) -> Iterator[dict[str, Any]]:
        skipped = 0
        pages = read_rows(self.config, self.engine, task.spec(), page_size=self.page_size, reader=self.reader,
                          partition_num=self.partition_num)
        for page in pages:
            for record in page:
                out = self.render(task, record)
                skipped += not out
                yield from out
        if skipped:
            meta = {"table": task.table.name, "skipped": skipped}
            yield marker_row(KIND_SKIP, _marker_task(task, "", ""), metadata=meta)

    def render(self, task: PartitionTask, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Rows for one database row; empty when the row is unchanged since the last sync."""
        table = task.table
        key = row_key(table.primary_key, record)
        uri = row_source_uri(task.source, table.name, key)
        doc_id = make_doc_id(uri)
        meta = row_metadata(source=task.source, database=task.database, table=table.name, key=key, row=record,
                            metadata_columns=task.metadata_columns)
        if task.validate and (problems := validate_row(table.columns, record)):
            return [marker_row(KIND_ERROR, _marker_task(task, doc_id, uri), error="; ".join(problems),
                               metadata=meta)]
        text = render_row(table.name, record, task.content_columns or table.column_names)
        acl = self.row_acl.acl_for(record, task.acl) if self.row_acl else task.acl
        digest = row_hash(text, meta, acl)  # covers the ACL: a row whose owner or group changed is written again
        if task.known.get(doc_id) == digest:
            return []
        meta["row_hash"] = digest
        chunks = chunk_document(ParsedDocument(uri, text, meta), self.chunker, acl, doc_id=doc_id)
        if not chunks:
            return [marker_row(KIND_EMPTY, _marker_task(task, doc_id, uri), metadata=meta)]
        return [chunk_row(c, len(chunks)) for c in chunks]

    def _partition_error(self, task: PartitionTask, message: str) -> dict[str, Any]:
        meta = {"table": task.table.name, "partition_error": True}
        return marker_row(KIND_ERROR, _marker_task(task, "", task.describe()), error=message, metadata=meta)


def _marker_task(task: PartitionTask, doc_id: str, uri: str) -> dict[str, Any]:
    return {"doc_id": doc_id, "source_uri": uri, "owner_id": task.acl.owner_id,
            "group_ids_json": json.dumps(list(task.acl.group_ids)), "visibility": task.acl.visibility}


class WriteRowChunks(WriteChunks):
    """``WriteChunks`` plus a ``row_json`` result column (table, key, row hash, ACL) for the driver's manifest."""

    def __init__(self, inner: WriteChunks):
        self.store = inner.store

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        infos = [_row_info(*row) for row in zip(batch["metadata_json"], batch["owner_id"], batch["group_ids_json"],
                                                batch["visibility"], strict=True)]
        out = super().__call__(batch)
        out["row_json"] = infos
        return out


def _row_info(metadata_json: Any, owner_id: Any, group_ids_json: Any, visibility: Any) -> str:
    meta = json.loads(str(metadata_json) or "{}")
    info = {k: meta[k] for k in ROW_INFO_KEYS if k in meta}
    info["acl"] = [str(owner_id), json.loads(str(group_ids_json) or "[]"), str(visibility)]
    return json.dumps(info, default=str)


class EmbedWriteFactories(Protocol):
    """The part of ``StageFactories`` RDB ingest reuses (``IngestStages`` or a test's local stages): rows are read
    and rendered by the sync's own parse stage."""

    def enrich(self, level: str | None = None) -> EnrichChunks: ...

    def embed(self) -> EmbedChunks: ...

    def write(self) -> WriteChunks: ...

    def shared_model(self) -> SharedModel | None: ...


@dataclass(frozen=True)
class RdbStages:
    """Picklable stage factories for one sync: Ray workers rebuild the reader (and its engine) themselves."""

    config: DatabaseConfig
    base: EmbedWriteFactories
    chunk_size: int = 800
    chunk_overlap: int = 100
    reader: ReaderKind = "auto"
    page_size: int = 1000
    partition_num: int = 1
    row_acl: RowAcl | None = None  # ACLs from owner/group columns (None: the request's ACL on every row)

    def parse(self) -> ParseAndChunk:
        return ReadRenderChunk(self.config, self.chunk_size, self.chunk_overlap, reader=self.reader,
                               page_size=self.page_size, partition_num=self.partition_num, row_acl=self.row_acl)

    def enrich(self, level: str | None = None) -> EnrichChunks:
        """The base's labelling stage (language / PII / sensitivity), as for files."""
        return self.base.enrich(level)

    def embed(self) -> EmbedChunks:
        return self.base.embed()

    def write(self) -> WriteChunks:
        return WriteRowChunks(self.base.write())

    def shared_model(self) -> SharedModel | None:
        return self.base.shared_model()


__all__ = ["KIND_CHUNK", "KIND_EMPTY", "KIND_ERROR", "KIND_SKIP", "EmbedWriteFactories", "PartitionTask",
           "RdbStages", "ReadRenderChunk", "WriteRowChunks"]
