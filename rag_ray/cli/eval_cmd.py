"""`rag-cli eval run`: retrieval quality of a collection on a BEIR-style eval set — nDCG@10, recall@k, MRR, p50/p95
search latency — as a table and JSON; with `--baseline`, a non-zero exit when a metric drops more than
`--tolerance` (a CI or deploy gate).

Judged documents are matched to stored chunks by `metadata.corpus_id`, the document id, or the source file's name
without extension (ingest `<corpus-id>.txt` files). `--corpus` instead loads a BEIR corpus into a scratch collection
through the ingest stages first (what bench/retrieval.py does) and drops it afterwards.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from rag_ray.cli.context import console_from, new_console, settings_from
from rag_ray.config import Settings
from rag_ray.embedding import create_embedder
from rag_ray.errors import RagError
from rag_ray.evaluation import Dataset, EvalReport, evaluate, ingest_corpus, load_eval_set, regressions
from rag_ray.evaluation.metrics import metric_names
from rag_ray.evaluation.runner import DEFAULT_FETCH_K
from rag_ray.runtime import ensure_milvus

app = typer.Typer(help="Evaluate retrieval quality (BEIR layout: queries.jsonl, qrels/test.tsv, corpus.jsonl)")


def _eval_set(dataset: Path | None, queries: Path | None, qrels: Path | None, corpus: Path | None,
              max_docs: int | None) -> Dataset:
    if dataset is not None:
        queries = queries or dataset / "queries.jsonl"
        qrels = qrels or dataset / "qrels" / "test.tsv"
    if queries is None or qrels is None:
        raise typer.BadParameter("give --queries and --qrels (or --dataset DIR)", param_hint="--queries")
    return load_eval_set(queries, qrels, corpus, max_docs=max_docs)


@app.command("run")
def run(ctx: typer.Context,
        queries: Path | None = typer.Option(None, "--queries", help="queries.jsonl ({_id, text} per line)"),
        qrels: Path | None = typer.Option(None, "--qrels", help="qrels .tsv (query-id, corpus-id, score; header)"),
        dataset: Path | None = typer.Option(None, "--dataset", help="a BEIR directory: its queries.jsonl and "
                                            "qrels/test.tsv (and corpus.jsonl with --corpus)"),
        corpus: Path | None = typer.Option(None, "--corpus", help="load this corpus.jsonl into a scratch collection "
                                           "first and evaluate that (dropped afterwards)"),
        collection: str | None = typer.Option(None, "--collection", help="collection or alias to evaluate "
                                              "(default RAG_COLLECTION: the live one)"),
        k: int = typer.Option(10, "--k", min=1, help="cut-off of recall@k and MRR@k (nDCG is @10)"),
        fetch_k: int = typer.Option(DEFAULT_FETCH_K, "--fetch-k", min=1, help="chunks retrieved per query"),
        strategy: str | None = typer.Option(None, "--strategy", help="dense|sparse|hybrid (default: the server's)"),
        embedding: str | None = typer.Option(None, "--embedding", help="PROVIDER:MODEL for --corpus (default: the "
                                             "configured one)"),
        max_docs: int | None = typer.Option(None, "--max-docs", help="cap --corpus (judged documents kept)"),
        baseline: Path | None = typer.Option(None, "--baseline", help="a report written by --output: exit 1 when a "
                                             "metric falls more than --tolerance below it"),
        tolerance: float = typer.Option(0.01, "--tolerance", min=0.0, help="allowed absolute drop against "
                                        "--baseline"),
        output: Path | None = typer.Option(None, "--output", help="write the report (JSON) here"),
        format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Run an eval set through the retrieval pipeline and report nDCG@10, recall@k, MRR and latency."""
    settings = settings_from(ctx)
    console = console_from(ctx)
    if strategy not in (None, "dense", "sparse", "hybrid"):
        raise typer.BadParameter("dense, sparse or hybrid", param_hint="--strategy")
    if dataset is not None and corpus is None and not (dataset / "queries.jsonl").exists():
        raise typer.BadParameter(f"{dataset} has no queries.jsonl", param_hint="--dataset")
    base = _baseline(baseline)
    try:
        data = _eval_set(dataset, queries, qrels, corpus, max_docs)
        milvus = ensure_milvus(settings)
        try:
            report = _evaluate(settings, data, collection=collection, corpus=corpus is not None, embedding=embedding,
                               k=k, fetch_k=min(fetch_k, settings.max_k), strategy=strategy)
        finally:
            if milvus is not None:
                milvus.stop()
    except RagError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    if output is not None:
        output.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    if format == "json":
        typer.echo(json.dumps(report.to_dict()))
    else:
        print_report(console, report)
    if base is not None:
        _gate(new_console(stderr=True) if format == "json" else console, report, base, tolerance)


def _baseline(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint="--baseline") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} is not a report (a JSON object)", param_hint="--baseline")
    return data


def _evaluate(settings: Settings, data: Dataset, *, collection: str | None, corpus: bool, embedding: str | None,
              k: int, fetch_k: int, strategy: Any) -> EvalReport:
    from rag_ray.index.catalog import IndexCatalog, connect_client
    from rag_ray.index.lifecycle import eval_retrieval, split_model_id

    client = connect_client(settings)
    catalog = IndexCatalog(client, settings.collection)
    configured = f"{settings.embedding_provider.lower()}:{settings.embedding_model}"
    if corpus:
        embedder = create_embedder(settings, *split_model_id(embedding or configured))
        name = f"eval_{uuid.uuid4().hex[:12]}"
        store = catalog.open(name, embedder.dimension, f"{embedder.provider}:{embedder.model}")
        try:
            id_map = ingest_corpus(data, store, embedder, settings.chunk_size, settings.chunk_overlap)
            report = evaluate(eval_retrieval(settings, store, embedder), data, strategy=strategy, k=k,
                              fetch_k=fetch_k, id_map=id_map)
        finally:
            store.drop()
    else:
        name = collection or catalog.live_name() or settings.collection
        info = catalog.info(name, rows=False)
        model = info.embedding_model or configured
        embedder = create_embedder(settings, *split_model_id(model))
        store = catalog.open(name, info.dimension, info.embedding_model)
        report = evaluate(eval_retrieval(settings, store, embedder), data, strategy=strategy, k=k, fetch_k=fetch_k)
    report.collection, report.embedding_model = name, f"{embedder.provider}:{embedder.model}"
    return report


def print_report(console: Console, report: EvalReport) -> None:
    table = Table(*metric_names(report.k), "p50 ms", "p95 ms",
                  title=f"{report.dataset} · {report.collection} · {report.embedding_model} · {report.strategy} · "
                        f"{report.queries} queries")
    metrics = report.metrics
    table.add_row(*(f"{metrics[m]:.4f}" for m in metric_names(report.k)), f"{metrics['p50_ms']:.1f}",
                  f"{metrics['p95_ms']:.1f}")
    console.print(table)


def _gate(console: Console, report: EvalReport, baseline: dict[str, Any], tolerance: float) -> None:
    worse = regressions(report.metrics, baseline, tolerance)
    if worse:
        for regression in worse:
            console.print(f"[red]regression:[/red] {regression}")
        console.print(f"[red]{len(worse)} metric(s) fell more than {tolerance:g} below the baseline[/red]")
        raise typer.Exit(1)
    console.print(f"[green]no metric fell more than {tolerance:g} below the baseline[/green]")
