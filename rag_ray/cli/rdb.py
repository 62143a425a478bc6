"""`rag-cli rdb inspect|sources|sync` — relational database sources: schema, named sources, syncs."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from rag_ray.cli.context import console_from, settings_from
from rag_ray.cli.progress import JobProgressBar
from rag_ray.config import Settings
from rag_ray.errors import InvalidInput, RagError
from rag_ray.ingest.rdb_sync import RdbSyncRequest, RdbSyncSummary
from rag_ray.sources.rdb.config import DatabaseConfig
from rag_ray.sources.rdb.introspect import TableInfo, inspect_tables
from rag_ray.sources.rdb.reader import create_source_engine
from rag_ray.sources.rdb.state import NamedSource, add_source, due_sources, get_source, list_sources, remove_source
from rag_ray.types import Acl

app = typer.Typer(help="Relational database sources: inspect schemas, register sources, sync them into Milvus")
sources_app = typer.Typer(help="Named database sources (URL stored encrypted)")
app.add_typer(sources_app, name="sources")

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_interval(value: str) -> int | None:
    """``3600``, ``30m``, ``1h``, ``1d`` → seconds; empty → None (sync on demand only)."""
    if not value:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value.lower())
    if not match or int(match.group(1)) == 0:
        raise typer.BadParameter("use e.g. 900, 15m, 1h or 1d", param_hint="--refresh-interval")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _database(url: str, url_env: str, schema: str | None) -> DatabaseConfig:
    """The URL's connection, under the same rules as the API's (one host, no socket, host/port overrides or
    file options in its parameters); only the RAG_RDB_ALLOWED_HOSTS check is for the API alone."""
    value = url or (os.environ.get(url_env, "") if url_env else "")
    if not value:
        raise typer.BadParameter("give --url or --url-env (with the variable set)", param_hint="--url")
    return DatabaseConfig.from_url(value, schema=schema)


def _fail(console: Console, exc: RagError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc.message}")
    return typer.Exit(2)


@app.command("inspect")
def inspect_cmd(ctx: typer.Context,
                url: str = typer.Option("", "--url", help="SQLAlchemy URL of the database"),
                url_env: str = typer.Option("", "--url-env", help="environment variable holding the URL"),
                schema: str | None = typer.Option(None, "--schema"),
                include_tables: str = typer.Option("", "--include-tables", help="comma separated"),
                counts: bool = typer.Option(True, "--counts/--no-counts", help="count rows per table"),
                format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Tables, columns and types, primary and foreign keys, row counts."""
    settings, console = settings_from(ctx), console_from(ctx)
    try:
        config = _database(url, url_env, schema).with_connect_timeout(settings.rdb_connect_timeout_s)
        engine = create_source_engine(config)
        try:
            tables = inspect_tables(engine, schema=schema, include=_split(include_tables) or None, row_counts=counts)
        finally:
            engine.dispose()
    except RagError as exc:
        raise _fail(console, exc) from None
    if format == "json":
        typer.echo(json.dumps({"database": config.masked_url(), "tables": [t.to_dict() for t in tables]}))
        return
    _print_tables(console, config, tables)


def _print_tables(console: Console, config: DatabaseConfig, tables: list[TableInfo]) -> None:
    table = Table("table", "rows", "primary key", "columns", "foreign keys", title=config.masked_url())
    for t in tables:
        fks = "; ".join(f"{','.join(fk['columns'])}→{fk['referred_table']}" for fk in t.foreign_keys)
        cols = ", ".join(f"{c.name}:{c.category}" for c in t.columns)
        table.add_row(t.name, "-" if t.row_count is None else str(t.row_count), ",".join(t.primary_key), cols, fks)
    console.print(table)


@sources_app.command("add")
def sources_add(ctx: typer.Context, name: str = typer.Argument(..., help="source name"),
                url: str = typer.Option("", "--url", help="SQLAlchemy URL (stored encrypted)"),
                url_env: str = typer.Option("", "--url-env", help="environment variable holding the URL"),
                schema: str | None = typer.Option(None, "--schema"),
                refresh_interval: str = typer.Option("", "--refresh-interval", help="e.g. 15m, 1h, 1d"),
                owner: str = typer.Option("system", "--owner"),
                groups: str = typer.Option("", "--groups", help="comma separated group ids"),
                visibility: str = typer.Option("", "--visibility", help="private|group|public"),
                mode: str = typer.Option("full", "--mode", help="full|incremental"),
                include_tables: str = typer.Option("", "--include-tables"),
                exclude_tables: str = typer.Option("", "--exclude-tables"),
                incremental_column: str | None = typer.Option(None, "--incremental-column"),
                batch_size: int = typer.Option(1000, "--batch-size"),
                max_rows: int | None = typer.Option(None, "--max-rows"),
                validate: bool = typer.Option(False, "--validate"),
                owner_column: str | None = typer.Option(None, "--owner-column",
                                                        help="a row's owner (user id or username) is its chunks'"),
                group_column: str | None = typer.Option(None, "--group-column",
                                                        help="a row's groups (ids or names, comma separated)"),
                replace: bool = typer.Option(False, "--replace", help="overwrite an existing source")) -> None:
    """Register a named source: its connection, sync options, refresh interval and the ACL of its chunks."""
    from rag_ray.runtime import Runtime

    settings, console = settings_from(ctx), console_from(ctx)
    group_ids = tuple(_split(groups))
    vis = visibility or ("group" if group_ids else "public")
    options: dict[str, Any] = {"mode": mode, "include_tables": _split(include_tables),
                               "exclude_tables": _split(exclude_tables), "incremental_column": incremental_column,
                               "batch_size": batch_size, "max_rows": max_rows, "validate_data": validate,
                               "schema": schema, "owner_column": owner_column, "group_column": group_column}
    try:
        if vis not in ("private", "group", "public"):
            raise InvalidInput("visibility must be private, group or public", field="visibility")
        source = NamedSource(name=name, config=_database(url, url_env, schema),
                             acl=Acl(owner, group_ids, vis),  # type: ignore[arg-type]
                             options=options, refresh_interval_s=parse_interval(refresh_interval))
        RdbSyncRequest.from_source(source).check()
        with Runtime(settings) as runtime:
            add_source(runtime.db, settings.jwt_secret(), source, replace=replace)
    except RagError as exc:
        raise _fail(console, exc) from None
    console.print(f"source [bold]{name}[/bold] → {source.config.masked_url()}")


@sources_app.command("list")
def sources_list(ctx: typer.Context, format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Named sources (URLs masked)."""
    from rag_ray.runtime import Runtime

    settings = settings_from(ctx)
    with Runtime(settings) as runtime:
        found = list_sources(runtime.db, settings.jwt_secret())
    if format == "json":
        typer.echo(json.dumps({"sources": [s.to_dict() for s in found]}, default=str))
        return
    table = Table("name", "url", "mode", "refresh", "acl", "last sync", title="rdb sources")
    for s in found:
        table.add_row(s.name, s.config.masked_url(), str(s.options.get("mode", "full")),
                      f"{s.refresh_interval_s}s" if s.refresh_interval_s else "-",
                      f"{s.acl.visibility}:{s.acl.owner_id}:{','.join(s.acl.group_ids)}",
                      s.last_synced_at.isoformat() if s.last_synced_at else "never")
    console_from(ctx).print(table)


@sources_app.command("remove")
def sources_remove(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Forget a named source and its watermarks (its chunks stay until cleaned up)."""
    from rag_ray.runtime import Runtime

    try:
        with Runtime(settings_from(ctx)) as runtime:
            remove_source(runtime.db, name)
    except RagError as exc:
        raise _fail(console_from(ctx), exc) from None
    console_from(ctx).print(f"removed source {name}")


@app.command()
def sync(ctx: typer.Context,
         source: str = typer.Option("", "--source", help="named source to sync"),
         url: str = typer.Option("", "--url", help="or a SQLAlchemy URL (one-off sync)"),
         url_env: str = typer.Option("", "--url-env"),
         mode: str = typer.Option("", "--mode", help="full|incremental (default: the source's)"),
         include_tables: str = typer.Option("", "--include-tables"),
         incremental_column: str | None = typer.Option(None, "--incremental-column"),
         due: bool = typer.Option(False, "--due", help="sync every source whose refresh interval has passed"),
         local: bool = typer.Option(False, "--local", help="run in-process instead of on Ray"),
         format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Sync a database into Milvus as a Ray Data job, with a progress bar."""
    settings, console = settings_from(ctx), console_from(ctx)
    try:
        if due:
            requests = _due_requests(settings, mode)
        elif source:
            requests = [_source_request(settings, source, mode)]
        else:
            requests = [RdbSyncRequest(database=_database(url, url_env, None), mode=mode or "full",  # type: ignore[arg-type]
                                       include_tables=_split(include_tables), incremental_column=incremental_column,
                                       acl=Acl("system", (), "public"))]
        failed = [s for r in requests if (s := run_with_progress(settings, console, r, local, format)).status
                  != "succeeded"]
    except RagError as exc:
        raise _fail(console, exc) from None
    if failed:
        raise typer.Exit(1)


def _source_request(settings: Settings, name: str, mode: str) -> RdbSyncRequest:
    from rag_ray.runtime import Runtime

    with Runtime(settings) as runtime:
        return RdbSyncRequest.from_source(get_source(runtime.db, settings.jwt_secret(), name), mode or None)


def _due_requests(settings: Settings, mode: str) -> list[RdbSyncRequest]:
    from rag_ray.runtime import Runtime

    with Runtime(settings) as runtime:
        return [RdbSyncRequest.from_source(s, mode or None) for s in due_sources(runtime.db, settings.jwt_secret())]


def run_with_progress(settings: Settings, console: Console, request: RdbSyncRequest, local: bool = False,
                      format: str = "table") -> RdbSyncSummary:
    """One sync with the rich progress bar; prints the summary. Used by `rdb sync` and `data sync`."""
    from rag_ray.server.platform import load_platform

    platform = load_platform("local" if local else settings.platform)
    request.database = request.database.with_connect_timeout(settings.rdb_connect_timeout_s)
    with JobProgressBar(console, f"sync {request.source}") as bar:
        summary = platform.run_rdb_job(settings, request, listeners=[bar])
    if format == "json":
        typer.echo(json.dumps(summary.to_dict(), default=str))
    else:
        _print_summary(console, summary)
    return summary


def _print_summary(console: Console, summary: RdbSyncSummary) -> None:
    console.print(f"[green]{summary.status}[/green] {summary.source} ({summary.mode}): {summary.rows_processed} rows "
                  f"ingested ({summary.chunks_written} chunks), {summary.rows_skipped} unchanged, "
                  f"{summary.rows_deleted} deleted, {len(summary.errors)} errors in {summary.duration_s:.1f}s")
    for t in summary.tables:
        console.print(f"  {t.table} [{t.mode}]: {t.rows_changed} changed, {t.rows_unchanged} unchanged, "
                      f"{t.rows_deleted} deleted, {t.errors} errors")
    for err in summary.errors[:20]:
        console.print(f"  [yellow]![/yellow] {err['item']}: {err['error']}")


def sync_source_command(ctx: typer.Context, source: str, mode: str, local: bool, format: str) -> None:
    """`rag-cli data sync --source NAME` (the seed's spelling) lands here."""
    settings, console = settings_from(ctx), console_from(ctx)
    try:
        summary = run_with_progress(settings, console, _source_request(settings, source, mode), local, format)
    except RagError as exc:
        raise _fail(console, exc) from None
    if summary.status != "succeeded":
        raise typer.Exit(1)
