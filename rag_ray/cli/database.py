"""`rag-cli database init|test|status|backup|restore`.

A backup is a tar.gz holding ``manifest.json`` (format, schema revision, collection, dimension, counts),
``metadata.json`` (every metadata table, rows as JSON) and ``chunks.jsonl`` (every Milvus row incl. its
vector; the BM25 sparse vector is recomputed by Milvus on restore).
"""

from __future__ import annotations

import base64
import json
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from sqlalchemy import DateTime, Engine, LargeBinary, MetaData, func, select, text
from sqlalchemy import Table as SqlTable
from sqlalchemy.engine import make_url

from rag_ray.access.bootstrap import bootstrap_admin
from rag_ray.access.sharing import CHUNK_FIELDS
from rag_ray.cli.context import console_from, fail, settings_from
from rag_ray.config import Settings
from rag_ray.errors import RagError, StoreError
from rag_ray.metadata import MetadataDB
from rag_ray.store.milvus import GRPC_OPTIONS, ChunkStore

app = typer.Typer(help="Initialise, inspect, back up and restore the metadata DB and the vector store",
                  no_args_is_help=True)

BACKUP_FORMAT = 1
PAGE = 1000
# Schema state, not data: the migration version and the job-admission lock row the migrations seed.
SKIP_TABLES = {"alembic_version", "job_admission"}
# The database refuses to delete their rows (the audit log): a restore appends the backup's rows with new ids.
APPEND_ONLY_TABLES = {"audit_events"}


# ---- helpers ----
def _mask_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def reflect(engine: Engine) -> list[SqlTable]:
    """Every table of the live schema (not just the models imported here), parents before children."""
    meta = MetaData()
    meta.reflect(engine)
    return [t for t in meta.sorted_tables if t.name not in SKIP_TABLES]


def schema_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception:  # no alembic table yet
            return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return {"__b64__": base64.b64encode(value).decode()}
    return value


def _from_json(column_type: Any, value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__b64__"} and isinstance(column_type, LargeBinary):
        return base64.b64decode(value["__b64__"])
    if isinstance(value, str) and isinstance(column_type, DateTime):
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo or not column_type.timezone else parsed.replace(tzinfo=UTC)
    return value


@contextmanager
def embedded_milvus(settings: Settings) -> Iterator[None]:
    """Start Milvus Lite for this command when it is the configured store and not running; stop it after."""
    from rag_ray.runtime import ensure_milvus

    server = ensure_milvus(settings)
    try:
        yield
    finally:
        if server is not None:
            server.stop()


def milvus_client(settings: Settings) -> Any:
    from pymilvus import MilvusClient

    try:
        return MilvusClient(uri=settings.milvus_address, token=settings.milvus_token_value,
                            timeout=settings.milvus_timeout_s, grpc_options=GRPC_OPTIONS)
    except Exception as exc:
        raise StoreError(f"cannot connect to Milvus at {settings.milvus_address}: {exc}") from exc


def existing_store(settings: Settings) -> ChunkStore | None:
    """The chunk collection if it exists (never creates one)."""
    client = milvus_client(settings)
    if not client.has_collection(settings.collection):
        return None
    fields = client.describe_collection(settings.collection).get("fields", [])
    dim = next(int(f["params"]["dim"]) for f in fields if f.get("name") == "vector")
    store = ChunkStore(client, settings.collection, dim)
    store.ensure_collection()
    return store


# ---- init / test / status ----
@app.command()
def init(ctx: typer.Context) -> None:
    """Create or upgrade the schema and bootstrap the first admin (a generated password is printed once)."""
    console = console_from(ctx)
    settings = settings_from(ctx)
    try:
        db = MetadataDB.from_settings(settings)
        password = bootstrap_admin(settings, db)
        revision = schema_revision(db.engine)
        db.dispose()
    except RagError as exc:
        fail(console, exc)
    console.print(f"metadata DB ready at {_mask_url(settings.metadata_url)} (revision {revision})")
    if password:
        console.print(f"created admin user [bold]{settings.admin_username}[/bold]; its password is shown once:")
        typer.echo(password)


@app.command("test")
def test_(ctx: typer.Context) -> None:
    """Connect to the metadata DB and print its dialect and server version."""
    console = console_from(ctx)
    settings = settings_from(ctx)
    try:
        db = MetadataDB.from_settings(settings, migrate=False)
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            version = ".".join(str(p) for p in (conn.dialect.server_version_info or ()))
        dialect = db.engine.dialect.name
        db.dispose()
    except Exception as exc:
        console.print(f"[red]cannot connect to {_mask_url(settings.metadata_url)}:[/red] {type(exc).__name__}")
        raise typer.Exit(1) from None
    console.print(f"ok: {dialect} {version or '?'} at {_mask_url(settings.metadata_url)}")


@app.command()
def status(ctx: typer.Context, format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Schema revision, row counts per table, and the Milvus collection's row count."""
    settings = settings_from(ctx)
    db = MetadataDB.from_settings(settings, migrate=False)
    with db.engine.connect() as conn:
        counts = {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar() or 0)
                  for t in reflect(db.engine)}
    report = {"url": _mask_url(settings.metadata_url), "revision": schema_revision(db.engine), "tables": counts,
              "collection": settings.collection, "chunks": _chunk_count(settings)}
    db.dispose()
    if format == "json":
        typer.echo(json.dumps(report, indent=2))
        return
    table = Table("table", "rows", title=f"{report['url']} (revision {report['revision']})")
    for name, count in counts.items():
        table.add_row(name, str(count))
    table.add_row(f"milvus:{settings.collection}", str(report["chunks"]))
    console_from(ctx).print(table)


def _chunk_count(settings: Settings) -> int | str:
    try:
        with embedded_milvus(settings):
            store = existing_store(settings)
            return store.count() if store is not None else 0
    except RagError as exc:
        return f"unavailable ({exc.message[:80]})"


# ---- backup ----
def dump_metadata(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for table in reflect(engine):
            rows = conn.execute(select(table)).mappings()
            out[table.name] = [{k: _jsonable(v) for k, v in row.items()} for row in rows]
    return out


def iter_chunk_rows(store: ChunkStore) -> Iterator[dict[str, Any]]:
    """Every row of the collection, paged with a query iterator (memory stays at one page)."""
    iterator = store.client.query_iterator(store.collection, batch_size=PAGE, limit=-1, filter="",
                                           output_fields=CHUNK_FIELDS)
    try:
        while batch := iterator.next():
            for row in batch:
                yield {k: row[k] for k in CHUNK_FIELDS if k in row} | {"vector": [float(x) for x in row["vector"]]}
    finally:
        iterator.close()


def write_backup(settings: Settings, output: Path) -> dict[str, Any]:
    db = MetadataDB.from_settings(settings)
    tables, revision = dump_metadata(db.engine), schema_revision(db.engine)
    db.dispose()
    store = existing_store(settings)
    with tempfile.TemporaryDirectory() as tmp:
        chunks_path = Path(tmp) / "chunks.jsonl"
        count = 0
        with chunks_path.open("w", encoding="utf-8") as fh:
            for row in iter_chunk_rows(store) if store is not None else iter(()):
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        manifest = {"format": BACKUP_FORMAT, "created_at": datetime.now(UTC).isoformat(), "revision": revision,
                    "collection": settings.collection, "dimension": store.dimension if store else None,
                    "chunks": count, "tables": {name: len(rows) for name, rows in tables.items()}}
        (Path(tmp) / "manifest.json").write_text(json.dumps(manifest, indent=2))
        (Path(tmp) / "metadata.json").write_text(json.dumps(tables, ensure_ascii=False))
        output.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(output, "w:gz") as tar:
            for name in ("manifest.json", "metadata.json", "chunks.jsonl"):
                tar.add(Path(tmp) / name, arcname=name)
    output.chmod(0o600)  # it holds password hashes
    return manifest


@app.command()
def backup(ctx: typer.Context, output: Path = typer.Option(..., "--output", "-o", help="the .tar.gz to write")
           ) -> None:
    """Back up every metadata table and the Milvus collection (with vectors) into one tar.gz."""
    console = console_from(ctx)
    settings = settings_from(ctx)
    try:
        with embedded_milvus(settings):
            manifest = write_backup(settings, output)
    except RagError as exc:
        fail(console, exc)
    console.print(f"backup written to {output}: {sum(manifest['tables'].values())} metadata rows in "
                  f"{len(manifest['tables'])} tables, {manifest['chunks']} chunks")


# ---- restore ----
def _member(tar: tarfile.TarFile, name: str) -> Any:
    handle = tar.extractfile(name)
    if handle is None:
        raise StoreError(f"backup has no {name}")
    return handle


def load_metadata(engine: Engine, tables: dict[str, list[dict[str, Any]]], replace: bool) -> int:
    live = reflect(engine)
    replaceable = [t for t in live if t.name not in APPEND_ONLY_TABLES]
    with engine.begin() as conn:
        if any(conn.execute(select(func.count()).select_from(t)).scalar() for t in replaceable):
            if not replace:
                raise StoreError("the metadata DB is not empty; restore into an empty one or pass --replace")
            for table in reversed(replaceable):
                conn.execute(table.delete())
        restored = 0
        for table in live:
            rows = [{k: _from_json(table.c[k].type, v) for k, v in row.items() if k in table.c and
                     not (table.name in APPEND_ONLY_TABLES and k in table.primary_key.columns)}
                    for row in tables.get(table.name, [])]
            if rows:
                conn.execute(table.insert(), rows)
                restored += len(rows)
    return restored


def load_chunks(settings: Settings, manifest: dict[str, Any], lines: Iterator[bytes], replace: bool) -> int:
    if not manifest.get("dimension"):
        return 0
    store = existing_store(settings)
    if store is not None and store.count() and not replace:
        raise StoreError(f"collection {settings.collection!r} is not empty; pass --replace to overwrite it")
    if store is not None and replace:
        store.drop()
    store = ChunkStore.connect(settings.milvus_address, settings.collection, int(manifest["dimension"]),
                               token=settings.milvus_token_value, timeout_s=settings.milvus_timeout_s)
    batch: list[dict[str, Any]] = []
    restored = 0
    for line in lines:
        batch.append(json.loads(line))
        if len(batch) >= PAGE:
            restored += store.upsert_rows(batch)
            batch = []
    restored += store.upsert_rows(batch)
    store.flush()
    return restored


def read_backup(settings: Settings, source: Path, replace: bool) -> tuple[int, int]:
    with tarfile.open(source, "r:gz") as tar:
        manifest = json.load(_member(tar, "manifest.json"))
        if manifest.get("format") != BACKUP_FORMAT:
            raise StoreError(f"unsupported backup format {manifest.get('format')!r}")
        db = MetadataDB.from_settings(settings)
        try:
            rows = load_metadata(db.engine, json.load(_member(tar, "metadata.json")), replace)
        finally:
            db.dispose()
        chunks = load_chunks(settings, manifest, iter(_member(tar, "chunks.jsonl")), replace)
    return rows, chunks


@app.command()
def restore(ctx: typer.Context, source: Path = typer.Argument(None, help="backup .tar.gz", show_default=False),
            input_: Path = typer.Option(None, "--input", "-i", help="backup .tar.gz (same as the argument)"),
            replace: bool = typer.Option(False, "--replace", help="wipe existing metadata rows and chunks first")
            ) -> None:
    """Restore a backup into an empty metadata DB and collection (or over them with --replace)."""
    console = console_from(ctx)
    path = source or input_
    if path is None or not path.is_file():
        console.print("[red]error:[/red] give an existing backup file")
        raise typer.Exit(2)
    settings = settings_from(ctx)
    try:
        with embedded_milvus(settings):
            rows, chunks = read_backup(settings, path, replace)
    except RagError as exc:
        fail(console, exc)
    console.print(f"restored {rows} metadata rows and {chunks} chunks from {path}")
