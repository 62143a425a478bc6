"""RDB extraction benchmark on the Chinook SQLite file (by default).

1. extract+render rows/s over every table: connectorx (Arrow, partitioned on the integer key) vs SQLAlchemy
   keyset pages vs SQLAlchemy ``yield_per`` streaming — same run, same rendering.
2. end-to-end rows/s of a full sync into Milvus (Milvus Lite started here, temp data dir) vs the raw
   embedding rate of the same rendered texts with the same embedder, alternating rounds, best of each:
   ``ratio_vs_raw_embed`` = raw embedding seconds ÷ sync seconds.

    uv run python bench/rdb.py [--url sqlite:///...] [--embedder local|fake] [--e2e-tables Album,Artist,...] [--ray]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag_ray.config import Settings
from rag_ray.embedding import create_embedder
from rag_ray.ingest.executor import LocalExecutor
from rag_ray.ingest.rdb_sync import RdbIngestor, RdbSyncRequest
from rag_ray.metadata import MetadataDB
from rag_ray.runtime import IngestStages
from rag_ray.sources.rdb.config import DatabaseConfig
from rag_ray.sources.rdb.introspect import TableInfo, inspect_tables
from rag_ray.sources.rdb.reader import (
    ReadSpec,
    connectorx_rows,
    connectorx_sql,
    create_source_engine,
    keyset_pages,
    stream_rows,
)
from rag_ray.sources.rdb.render import render_row
from rag_ray.store.lite_server import MilvusLiteServer, free_port
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl

CHINOOK = Path(__file__).resolve().parents[2] / "shared" / "data" / "chinook" / "Chinook_Sqlite.sqlite"
PIPELINE_BATCH = 256  # chunks per model call in the local executor (as the server's RDB jobs run)
# 4,240 rows (Track is 3,503 of them): a sync's fixed cost (~0.5 s: job records, schema, the final flush) is a few
# percent of it, as in a real table; the seven small tables alone (737 rows, ~3 s) measure mostly that fixed cost
DEFAULT_E2E = "Album,Artist,Customer,Employee,Genre,MediaType,Playlist,Track"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="RDB extraction benchmark")
    p.add_argument("--url", default=f"sqlite:///{CHINOOK}")
    p.add_argument("--partitions", type=int, default=2, help="connectorx partition_num")
    p.add_argument("--page-size", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3, help="extraction passes (best kept)")
    p.add_argument("--embedder", default="local", help="local (all-MiniLM-L6-v2) or fake")
    p.add_argument("--e2e-tables", default=DEFAULT_E2E)
    p.add_argument("--e2e-rounds", type=int, default=2, help="alternating sync / raw embedding rounds (best kept)")
    p.add_argument("--ray", action="store_true", help="run the e2e sync on Ray Data instead of in-process")
    return p.parse_args()


def _render_all(table: TableInfo, rows: list[dict[str, Any]]) -> int:
    for row in rows:
        render_row(table.name, row, table.column_names)
    return len(rows)


def extract_connectorx(config: DatabaseConfig, tables: list[TableInfo], partitions: int) -> int:
    url = config.connectorx_url() or ""
    total = 0
    for table in tables:
        rows = connectorx_rows(url, connectorx_sql(config, ReadSpec(table)) or "", partition_on=table.integer_key,
                               partition_num=partitions)
        total += _render_all(table, rows)
    return total


def extract_keyset(config: DatabaseConfig, tables: list[TableInfo], page_size: int) -> int:
    engine = create_source_engine(config)
    total = sum(_render_all(t, page) for t in tables for page in keyset_pages(engine, ReadSpec(t), page_size))
    engine.dispose()
    return total


def extract_stream(config: DatabaseConfig, tables: list[TableInfo], page_size: int) -> int:
    engine = create_source_engine(config)
    total = sum(_render_all(t, page) for t in tables for page in stream_rows(engine, ReadSpec(t).select(), page_size))
    engine.dispose()
    return total


def best_rate(fn: Any, repeat: int) -> tuple[float, int]:
    best, rows = 0.0, 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = fn()
        best = max(best, rows / (time.perf_counter() - started))
    return best, rows


def e2e(args: argparse.Namespace, config: DatabaseConfig, tables: list[str], tmp: Path) -> dict[str, Any]:
    """Alternating rounds: a full sync into a fresh collection and metadata DB, then the raw embedding of the same
    rendered chunk texts with the same embedder in the pipeline's batches; the best round of each side is kept. Each
    round also times a re-sync of the unchanged tables (``resync_s``: a periodic sync of a quiet database)."""
    server = MilvusLiteServer(tmp / "milvus", free_port()).start()
    try:
        model = "all-MiniLM-L6-v2" if args.embedder == "local" else "hash-bow"
        settings = Settings(data_dir=tmp / "data", milvus_uri=server.uri, collection="bench_rdb",  # type: ignore[call-arg]
                            embedding_provider=args.embedder, embedding_model=model, app_env="test")
        embedder = create_embedder(settings)
        request = RdbSyncRequest(config, source_name="bench", include_tables=tables, acl=Acl("system", (), "public"),
                                 batch_size=args.page_size)
        e2e_times, raw_times, resync_times, rows, texts = [], [], [], 0, []
        for round_ in range(args.e2e_rounds):
            collection = f"bench_rdb_{round_}"
            store = ChunkStore.connect(server.uri, collection, embedder.dimension)
            db = MetadataDB(f"sqlite:///{tmp / f'meta{round_}.sqlite'}")
            ingestor = _ingestor(args, settings.model_copy(update={"collection": collection}), db, store, embedder)
            started = time.perf_counter()
            summary = ingestor.run(request)
            e2e_times.append(time.perf_counter() - started)
            assert summary.status == "succeeded", summary.errors
            rows = summary.rows_processed
            started = time.perf_counter()
            again = ingestor.run(request)
            resync_times.append(time.perf_counter() - started)
            assert again.status == "succeeded" and again.rows_skipped == rows, again
            texts = texts or [r["text"] for r in store.query("", ("text",))]
            raw_times.append(_raw_embed_seconds(embedder, texts, PIPELINE_BATCH))
        e2e_s, raw_s = min(e2e_times), min(raw_times)
        return {"e2e_rows": rows, "e2e_chunks": len(texts), "e2e_s": round(e2e_s, 2),
                "e2e_rows_per_s": round(rows / e2e_s, 1), "raw_embed_rows_per_s": round(rows / raw_s, 1),
                "raw_embed_texts_per_s": round(len(texts) / raw_s, 1),
                "ratio_vs_raw_embed": round(raw_s / e2e_s, 3), "e2e_rounds_s": [round(t, 2) for t in e2e_times],
                "raw_rounds_s": [round(t, 2) for t in raw_times], "resync_s": round(min(resync_times), 2),
                "resync_rounds_s": [round(t, 2) for t in resync_times], "embedder": f"{args.embedder}:{model}",
                "executor": "ray" if args.ray else "local"}
    finally:
        server.stop()


def _ingestor(args: argparse.Namespace, settings: Settings, db: MetadataDB, store: ChunkStore,
              embedder: Any) -> RdbIngestor:
    if args.ray:
        from jobs.sync_rdb import make_executor

        stages: Any = IngestStages(settings, embedder.dimension)
        return RdbIngestor(db, store, make_executor(settings, use_ray=True), stages)
    return RdbIngestor(db, store, LocalExecutor.from_settings(settings, batch_size=PIPELINE_BATCH),
                       _SharedStages(store, embedder))


class _SharedStages:
    """In-process stages sharing one loaded embedder and store (what LocalExecutor needs)."""

    def __init__(self, store: ChunkStore, embedder: Any):
        self.store, self.embedder = store, embedder

    def enrich(self, level: str | None = None) -> Any:
        from rag_ray.ingest.stages import EnrichChunks

        return EnrichChunks(level or "standard")

    def embed(self) -> Any:
        from rag_ray.ingest.stages import EmbedChunks

        return EmbedChunks(lambda: self.embedder)

    def shared_model(self) -> None:
        return None  # the loaded embedder of this process

    def write(self) -> Any:
        from rag_ray.ingest.stages import WriteChunks

        return WriteChunks(lambda: self.store)


def _raw_embed_seconds(embedder: Any, texts: list[str], size: int) -> float:
    """Seconds to embed ``texts`` in calls of ``size`` (what the pipeline hands the model)."""
    started = time.perf_counter()
    for start in range(0, len(texts), size):
        embedder.embed(texts[start:start + size], input_type="document")
    return time.perf_counter() - started


def main() -> None:
    args = parse_args()
    config = DatabaseConfig.from_url(args.url)
    engine = create_source_engine(config)
    tables = inspect_tables(engine, row_counts=True)
    engine.dispose()
    cx, rows = best_rate(lambda: extract_connectorx(config, tables, args.partitions), args.repeat)
    keyset, _ = best_rate(lambda: extract_keyset(config, tables, args.page_size), args.repeat)
    stream, _ = best_rate(lambda: extract_stream(config, tables, args.page_size), args.repeat)
    result: dict[str, Any] = {"source": config.masked_url(), "tables": len(tables), "rows": rows,
                              "rows_per_s_connectorx": round(cx, 1), "rows_per_s_sqlalchemy": round(keyset, 1),
                              "rows_per_s_sqlalchemy_stream": round(stream, 1),
                              "connectorx_partitions": args.partitions}
    with tempfile.TemporaryDirectory(prefix="bench-rdb-") as tmp:
        result.update(e2e(args, config, [t for t in args.e2e_tables.split(",") if t], Path(tmp)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
