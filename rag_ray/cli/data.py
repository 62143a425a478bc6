"""`rag-cli data ingest|status|cleanup|enrich` — file ingestion as a Ray Data job, store status (with enrichment
label counts), clean-up, re-labelling stored chunks without re-embedding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rag_ray.cli.context import console_from, settings_from
from rag_ray.cli.progress import JobProgressBar
from rag_ray.errors import RagError
from rag_ray.ingest.file_ingest import FileIngestRequest, IngestSummary
from rag_ray.ingest.maintenance import StoreStatus, cleanup_orphans, relabel_chunks, store_status
from rag_ray.runtime import Runtime, ensure_milvus
from rag_ray.types import Acl

app = typer.Typer(help="Ingest files, inspect and clean the store")


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def ingest(ctx: typer.Context,
           path: Path = typer.Option(..., "--path", help="directory (or file) to ingest"),
           recursive: bool = typer.Option(False, "--recursive", "-r", help="descend into sub-directories"),
           file_types: str = typer.Option("", "--file-types", help="comma separated, e.g. pdf,docx"),
           include: list[str] = typer.Option([], "--include", help="glob of files to take (repeatable)"),
           exclude: list[str] = typer.Option([], "--exclude", help="glob of files to skip (repeatable)"),
           owner: str = typer.Option("system", "--owner", help="owner id stamped on the chunks"),
           groups: str = typer.Option("", "--groups", help="comma separated group ids allowed to read"),
           visibility: str = typer.Option("", "--visibility", help="private|group|public (default: group when "
                                                                   "--groups is given, else public)"),
           all_files: bool = typer.Option(False, "--all", help="re-ingest unchanged files too"),
           level: str = typer.Option("", "--enrichment-level",
                                     help="off|basic|standard|comprehensive (default RAG_ENRICHMENT_LEVEL)"),
           format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Ingest files with a Ray Data job: parse → chunk → embed → upsert into Milvus."""
    from rag_ray.server.platform import load_platform

    settings = settings_from(ctx)
    console = console_from(ctx)
    group_ids = tuple(_split(groups))
    vis = visibility or ("group" if group_ids else "public")
    if vis not in ("private", "group", "public"):
        raise typer.BadParameter("must be private, group or public", param_hint="--visibility")
    request = FileIngestRequest(path=path, recursive=recursive, file_types=_split(file_types) or None,
                                include=include, exclude=exclude, acl=Acl(owner, group_ids, vis),  # type: ignore[arg-type]
                                only_changed=not all_files, enrichment_level=level or None)
    try:
        with JobProgressBar(console, f"ingest {path}") as bar:
            summary = load_platform(settings.platform).run_file_job(settings, request, listeners=[bar])
    except RagError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    if format == "json":
        typer.echo(json.dumps(summary.to_dict(), default=str))
    else:
        _print_summary(console, summary)
    if summary.status != "succeeded":
        raise typer.Exit(1)


def _print_summary(console: Console, summary: IngestSummary, prefix: str = "") -> None:
    colour = "green" if summary.status == "succeeded" else "red"
    console.print(f"{prefix}[{colour}]{summary.status}[/{colour}]: {summary.files_processed} files ingested "
                  f"({summary.chunks_written} chunks), {summary.files_skipped} unchanged, "
                  f"{summary.files_deleted} removed, {len(summary.errors)} errors in {summary.duration_s:.1f}s "
                  f"(job {summary.job_id})")
    for err in summary.errors:
        console.print(f"  [yellow]![/yellow] {err['item']}: {err['error']}")


@app.command()
def status(ctx: typer.Context, format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Documents, chunks, the last job and its per-file errors."""
    settings = settings_from(ctx)
    milvus = ensure_milvus(settings)
    try:
        with Runtime(settings) as runtime:
            report = store_status(runtime.db, runtime.store)
    finally:
        if milvus is not None:
            milvus.stop()
    if format == "json":
        typer.echo(json.dumps(report.to_dict(), default=str))
        return
    console = console_from(ctx)
    table = Table("documents", "chunks", "by type", "last job", "status", title="rag-ray store")
    job = report.last_job or {}
    table.add_row(str(report.documents), str(report.chunks),
                  ", ".join(f"{k}={v}" for k, v in sorted(report.documents_by_type.items())),
                  str(job.get("job_id", "-")), str(job.get("status", "-")))
    console.print(table)
    _print_labels(console, report)
    for item in report.failed_items:
        console.print(f"  [yellow]![/yellow] {item['item']}: {item['error']}")


LABEL_ROWS_SHOWN = 50


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def _print_labels(console: Console, report: StoreStatus) -> None:
    """Enrichment labels per source ("-" language: chunks never enriched; `data enrich` labels them)."""
    if not report.labels_by_source:
        return
    table = Table("source", "chunks", "sensitivity", "language", "pii types", title="labels by source")
    for source, labels in list(report.labels_by_source.items())[:LABEL_ROWS_SHOWN]:
        table.add_row(source, str(sum(labels["sensitivity"].values())), _counts(labels["sensitivity"]),
                      _counts(labels["language"]), _counts(labels["pii_types"]))
    total = report.labels
    table.add_row("[bold]all[/bold]", str(report.chunks), _counts(total.get("sensitivity", {})),
                  _counts(total.get("language", {})), _counts(total.get("pii_types", {})))
    console.print(table)
    hidden = len(report.labels_by_source) - LABEL_ROWS_SHOWN
    if hidden > 0:
        console.print(f"  ({hidden} more sources: --format json lists them all)")


@app.command()
def enrich(ctx: typer.Context,
           source: str = typer.Option(..., "--source", help="path prefix of the sources, or one document id"),
           level: str = typer.Option("", "--level", help="basic|standard|comprehensive (default "
                                                         "RAG_ENRICHMENT_LEVEL)"),
           reset: bool = typer.Option(False, "--reset", help="drop the old labels first (a sensitivity may then "
                                                             "be lowered)"),
           format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Re-label stored chunks (language, PII, sensitivity) without re-embedding them."""
    settings = settings_from(ctx)
    console = console_from(ctx)
    milvus = ensure_milvus(settings)
    try:
        with Runtime(settings) as runtime, _RelabelBar(console, f"enrich {source}") as bar:
            report = relabel_chunks(runtime.store, source, level or settings.enrichment_level, reset=reset,
                                    progress=bar)
    except RagError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    finally:
        if milvus is not None:
            milvus.stop()
    if format == "json":
        typer.echo(json.dumps(report.to_dict()))
    else:
        console.print(f"[green]relabelled[/green] {report.chunks} chunks of {source!r} at level {report.level} "
                      f"({report.changed} changed) in {report.duration_s:.1f}s")
    if not report.chunks:  # a typo'd prefix should not look like success
        raise typer.Exit(1)


class _RelabelBar:
    def __init__(self, console: Console, description: str):
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("chunks"), TimeElapsedColumn(), console=console)
        self.task = self.progress.add_task(description, total=None)

    def __enter__(self) -> _RelabelBar:
        self.progress.start()
        return self

    def __call__(self, done: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *_: Any) -> None:
        self.progress.stop()


@app.command()
def cleanup(ctx: typer.Context, orphaned: bool = typer.Option(False, "--orphaned",
                                                               help="remove chunks with no document and "
                                                                    "documents whose file is gone"),
            dry_run: bool = typer.Option(False, "--dry-run"),
            format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Remove orphaned chunks and vanished files from the store."""
    if not orphaned:
        raise typer.BadParameter("say what to clean: --orphaned", param_hint="--orphaned")
    settings = settings_from(ctx)
    milvus = ensure_milvus(settings)
    try:
        with Runtime(settings) as runtime:
            report = cleanup_orphans(runtime.db, runtime.store, dry_run=dry_run)
    finally:
        if milvus is not None:
            milvus.stop()
    if format == "json":
        typer.echo(json.dumps(report.to_dict()))
    else:
        verb = "would remove" if dry_run else "removed"
        console_from(ctx).print(f"{verb} {report.orphan_chunks} orphaned chunks, {report.missing_files} missing "
                                f"files ({report.missing_file_chunks} chunks)")


@app.command()
def sync(ctx: typer.Context,
         source: str = typer.Option(..., "--source", help="`filesystem`: the paths ingested before; else a named "
                                                          "database source"),
         mode: str = typer.Option("", "--mode", help="database sources: full|incremental (default: the source's)"),
         local: bool = typer.Option(False, "--local", help="database sources: run in-process instead of on Ray"),
         format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Re-sync the paths ingested before (`--source filesystem`: changed files re-ingested, deleted ones removed),
    or a named database source (see `rag-cli rdb sources add`) into Milvus."""
    from rag_ray.ingest.resync import FILESYSTEM_SOURCE

    if source == FILESYSTEM_SOURCE:
        _sync_filesystem(ctx, format)
        return
    from rag_ray.cli.rdb import sync_source_command

    sync_source_command(ctx, source, mode, local, format)


def _sync_filesystem(ctx: typer.Context, format: str) -> None:
    from rag_ray.ingest.resync import previous_file_requests
    from rag_ray.metadata import MetadataDB
    from rag_ray.server.platform import load_platform

    settings = settings_from(ctx)
    console = console_from(ctx)
    db = MetadataDB.from_settings(settings)
    try:
        plan = previous_file_requests(db, exclude_under=[settings.resolved_data_dir / "uploads"])
    finally:
        db.dispose()
    if not plan.requests and not plan.missing:
        console.print("nothing to sync: no path was ingested yet (`rag-cli data ingest --path …`)")
        return
    platform = load_platform(settings.platform)
    summaries = []
    try:
        for request in plan.requests:
            with JobProgressBar(console, f"sync {request.path}") as bar:
                summaries.append(platform.run_file_job(settings, request, listeners=[bar]))
    except RagError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    if format == "json":
        typer.echo(json.dumps({"synced": [s.to_dict() for s in summaries], "missing": plan.missing}, default=str))
    else:
        for request, summary in zip(plan.requests, summaries, strict=True):
            _print_summary(console, summary, f"{request.path}: ")
        for path in plan.missing:
            console.print(f"  [yellow]![/yellow] {path} no longer exists: not synced (`rag-cli data cleanup "
                          f"--orphaned` removes its documents)")
    if any(s.status != "succeeded" for s in summaries):
        raise typer.Exit(1)
