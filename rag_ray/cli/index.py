"""`rag-cli index rebuild|switch|rollback|list|drop`: re-embed or re-chunk into a new collection while the live one
keeps answering, then move the `RAG_COLLECTION` alias behind an evaluation gate (`rag_ray.index`).

The first rebuild of an install whose `RAG_COLLECTION` is a plain collection renames it to
`<name>__<model>__<n>` and creates the alias `<name>` pointing at it (queries arriving in the milliseconds between
the two Milvus calls fail: do it at a quiet moment). After `switch`, set the printed `EMBEDDING_*` (and chunking)
settings before the next start: the server follows the alias at once, but refuses to start on a model mismatch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from rag_ray.cli.context import console_from, new_console, settings_from
from rag_ray.cli.progress import JobProgressBar
from rag_ray.errors import RagError
from rag_ray.index.gate import EvalGate, GateFailed, GateResult
from rag_ray.index.lifecycle import IndexLifecycle, RebuildRequest, SwitchResult
from rag_ray.metadata import MetadataDB
from rag_ray.runtime import ensure_milvus

app = typer.Typer(help="Rebuild, evaluate and switch the collections behind RAG_COLLECTION (an alias)")
T = TypeVar("T")


@contextmanager
def _lifecycle(ctx: typer.Context) -> Iterator[IndexLifecycle]:
    settings = settings_from(ctx)
    milvus = ensure_milvus(settings)
    db = MetadataDB.from_settings(settings)
    try:
        yield IndexLifecycle(settings, db)
    finally:
        db.dispose()
        if milvus is not None:
            milvus.stop()


def _run(ctx: typer.Context, action: Callable[[IndexLifecycle], T]) -> T:
    console = console_from(ctx)
    try:
        with _lifecycle(ctx) as lifecycle:
            return action(lifecycle)
    except GateFailed as exc:
        _print_gate(console, exc.details)
        console.print(f"[red]not switched:[/red] {exc.message}")
        raise typer.Exit(1) from None
    except RagError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None


@app.command()
def rebuild(ctx: typer.Context,
            embedding: str | None = typer.Option(None, "--embedding", help="PROVIDER:MODEL (default: the live "
                                                 "collection's)"),
            chunk_size: int | None = typer.Option(None, "--chunk-size", help="characters (default: the live "
                                                  "collection's; another size re-chunks from the source files)"),
            chunk_overlap: int | None = typer.Option(None, "--chunk-overlap"),
            format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Build a collection with another embedding model or chunking from the live one (a job: `rag-cli` shows its
    progress; cancel it with the jobs API). Queries keep hitting the live collection."""
    console = console_from(ctx)
    request = RebuildRequest(embedding, chunk_size, chunk_overlap)

    def build(lifecycle: IndexLifecycle) -> Any:
        bar_console = new_console(stderr=True) if format == "json" else console  # stdout stays one JSON document
        with JobProgressBar(bar_console, f"rebuild {embedding or 'live model'}") as bar:
            return lifecycle.rebuild(request, listeners=[bar])

    summary = _run(ctx, build)
    if format == "json":
        typer.echo(json.dumps(summary.to_dict(), default=str))
    else:
        colour = "green" if summary.status == "succeeded" else "red"
        console.print(f"[{colour}]{summary.status}[/{colour}]: {summary.collection} ({summary.embedding_model}, "
                      f"{summary.dimension}-d, {summary.mode}): {summary.docs_synced} documents / "
                      f"{summary.chunks_written} chunks written, {summary.docs_removed} removed, "
                      f"{summary.docs_live} live documents in {summary.duration_s:.1f}s (job {summary.job_id})")
        for note in summary.notes:
            console.print(f"  [yellow]![/yellow] {note}")
        if summary.status == "succeeded":
            console.print(f"next: `rag-cli index switch` (live: {summary.live})")
    if summary.status != "succeeded":
        raise typer.Exit(1)


@app.command()
def switch(ctx: typer.Context,
           name: str | None = typer.Argument(None, help="collection to make live (default: the newest ready one)"),
           queries: Path | None = typer.Option(None, "--queries", help="eval queries.jsonl (default "
                                               "RAG_EVAL_QUERIES)"),
           qrels: Path | None = typer.Option(None, "--qrels", help="eval qrels .tsv (default RAG_EVAL_QRELS)"),
           tolerance: float | None = typer.Option(None, "--tolerance", min=0.0, help="allowed absolute drop of "
                                                  "any metric (default RAG_EVAL_TOLERANCE)"),
           force: bool = typer.Option(False, "--force", help="switch without the evaluation gate and while ingest "
                                      "jobs are open"),
           format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Move the alias to a rebuilt collection, atomically, when it scores at least as well as the live one."""
    settings = settings_from(ctx)
    try:
        gate = None if force else EvalGate.configured(settings, queries, qrels, tolerance)
    except RagError as exc:
        console_from(ctx).print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    result = _run(ctx, lambda lifecycle: lifecycle.switch(name, gate=gate, force=force))
    _print_switch(ctx, result, format)


@app.command()
def rollback(ctx: typer.Context,
             force: bool = typer.Option(False, "--force", help="also while ingest jobs are open"),
             format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Move the alias back to the collection that was live before the last switch (brought up to date first)."""
    _print_switch(ctx, _run(ctx, lambda lifecycle: lifecycle.rollback(force=force)), format)


@app.command("list")
def list_(ctx: typer.Context, format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Collections behind the alias: model, dimension, chunking, rows, status, which is live."""
    statuses = _run(ctx, lambda lifecycle: lifecycle.statuses())
    if format == "json":
        typer.echo(json.dumps([s.to_dict() for s in statuses], default=str))
        return
    table = Table("", "collection", "model", "dim", "chunking", "rows", "status", "previous",
                  title=f"collections behind {settings_from(ctx).collection!r}")
    for s in statuses:
        e = s.entry
        chunking = f"{e.chunk_size}/{e.chunk_overlap}" if e.chunk_size else "-"
        table.add_row("[green]live[/green]" if s.live else "", e.name, e.embedding_model or "-", str(e.dimension),
                      chunking, "-" if s.rows is None else str(s.rows), e.status, e.previous or "")
    console_from(ctx).print(table)


@app.command()
def drop(ctx: typer.Context, name: str = typer.Argument(..., help="a collection of `rag-cli index list`"),
         yes: bool = typer.Option(False, "--yes", "-y", help="do not ask")) -> None:
    """Drop a collection that is not live (old collections are kept until you drop them)."""
    if not yes:
        typer.confirm(f"drop collection {name!r} and its vectors?", abort=True)
    _run(ctx, lambda lifecycle: lifecycle.drop(name))
    console_from(ctx).print(f"dropped {name}")


def _print_switch(ctx: typer.Context, result: SwitchResult, format: str) -> None:
    if format == "json":
        typer.echo(json.dumps({**result.to_dict(), "configure": result.config_hint()}, default=str))
        return
    console = console_from(ctx)
    if result.gate is not None:
        _print_gate(console, result.gate.to_dict())
    how = " (forced)" if result.forced else ""
    console.print(f"[green]live:[/green] {result.live} ({result.embedding_model}, {result.dimension}-d); previous: "
                  f"{result.previous}{how}; synced first: {result.synced['docs']} documents, "
                  f"{result.synced['removed']} removed")
    console.print(f"set before the next start: {result.config_hint()}")


def _print_gate(console: Console, gate: dict[str, Any] | GateResult) -> None:
    data = gate.to_dict() if isinstance(gate, GateResult) else gate
    rows = data.get("rows") or []
    if not rows:
        return
    table = Table("strategy", "metric", "live", "candidate", "Δ", "",
                  title=f"evaluation gate: {data.get('candidate')} vs {data.get('live')} "
                        f"(tolerance {data.get('tolerance')})")
    for row in rows:
        mark = "[green]ok[/green]" if row["ok"] else "[red]worse[/red]"
        table.add_row(row["strategy"], row["metric"], f"{row['live']:.4f}", f"{row['candidate']:.4f}",
                      f"{row['delta']:+.4f}", mark)
    console.print(table)
