"""`rag-cli eval run` and the evaluation library it shares with bench/retrieval.py and the index switch gate:
metrics on known rankings, a run against a collection, the baseline gate, a BEIR corpus loaded into a scratch
collection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rag_ray.cli.main import app as cli_app
from rag_ray.config import Settings
from rag_ray.evaluation import load_dataset, query_metrics, regressions
from rag_ray.index.catalog import IndexCatalog
from rag_ray.store.milvus import ChunkStore
from tests.test_index_lifecycle import (
    N_DOCS,
    WORDS,
    corpus_chunks,
    doc_text,
    live_store,
    query_text,
    settings,
    upsert,
    write_eval_set,
)

__all__ = ["live_store", "settings"]  # fixtures shared with the index lifecycle tests
runner = CliRunner()


def env_of(settings: Settings) -> dict[str, str]:
    return {"RAG_DATA_DIR": str(settings.data_dir), "MILVUS_URI": settings.milvus_address,
            "RAG_COLLECTION": settings.collection, "EMBEDDING_PROVIDER": "fake", "EMBEDDING_MODEL": "hash-bow",
            "LLM_PROVIDER": "fake", "LLM_MODEL": "echo", "APP_ENV": "test", "SECRET_KEY": "s" * 40}


def eval_run(settings: Settings, *args: str) -> Any:
    return runner.invoke(cli_app, ["eval", "run", *args], env=env_of(settings))


def test_metrics_on_known_rankings() -> None:
    relevant = {"a": 1, "b": 2}
    perfect = query_metrics(["b", "a", "x"], relevant)
    assert perfect == {"ndcg@10": 1.0, "recall@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0}
    late = query_metrics(["x", "y", "a"], relevant, k=2)
    assert late["mrr@10"] == pytest.approx(1 / 3) and late["recall@10"] == 0.5 and late["recall@2"] == 0.0
    assert late["mrr@2"] == 0.0 and 0 < late["ndcg@10"] < 0.5
    worse = regressions({"ndcg@10": 0.70, "mrr@10": 0.80, "p50_ms": 90.0},
                        {"metrics": {"ndcg@10": 0.72, "mrr@10": 0.80, "p50_ms": 10.0}}, tolerance=0.01)
    assert [(r.metric, r.drop) for r in worse] == [("ndcg@10", 0.02)]  # latency is never gated
    assert regressions({"ndcg@10": 0.715}, {"ndcg@10": 0.72}, tolerance=0.01) == []


def test_eval_run_reports_and_gates_on_a_baseline(settings: Settings, live_store: ChunkStore, tmp_path: Path) -> None:
    upsert(live_store, corpus_chunks())
    queries, qrels = write_eval_set(tmp_path / "eval")
    baseline = tmp_path / "baseline.json"
    result = eval_run(settings, "--queries", str(queries), "--qrels", str(qrels), "--format", "json",
                      "--output", str(baseline), "--k", "5")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["queries"] == N_DOCS and report["collection"] == settings.collection
    assert (report["strategy"], report["embedding_model"]) == ("hybrid", "fake:hash-bow")
    metrics = report["metrics"]
    assert metrics["ndcg@10"] == metrics["mrr@10"] == metrics["recall@5"] == 1.0
    assert {"recall@10", "recall@100", "mrr@5", "p50_ms", "p95_ms"} <= set(metrics)
    assert json.loads(baseline.read_text())["metrics"] == metrics

    table = eval_run(settings, "--queries", str(queries), "--qrels", str(qrels), "--strategy", "dense",
                     "--baseline", str(baseline))
    assert table.exit_code == 0 and "ndcg@10" in table.output, table.output
    assert "no metric fell" in table.output
    better = tmp_path / "better.json"
    better.write_text(json.dumps({"metrics": {**metrics, "ndcg@10": 1.0, "mrr@10": 1.2}}))
    failed = eval_run(settings, "--queries", str(queries), "--qrels", str(qrels), "--baseline", str(better))
    assert failed.exit_code == 1 and "regression: mrr@10" in failed.output, failed.output
    missing = eval_run(settings, "--queries", str(tmp_path / "none.jsonl"), "--qrels", str(qrels))
    assert missing.exit_code == 2 and "cannot read the queries file" in missing.output


def test_eval_run_loads_a_beir_corpus_into_a_scratch_collection(settings: Settings, live_store: ChunkStore,
                                                                tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"c{i}", "title": WORDS[i], "text": doc_text(WORDS[i], WORDS[i + 1])}) + "\n"
        for i in range(12)))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": query_text(WORDS[i])}) + "\n"
                                                for i in range(14)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\tc{i}\t1\n" for i in range(14)) + "q0\tc5\t0\n")  # q12, q13: judged docs missing; c5: not relevant
    dataset = load_dataset(root, max_docs=4)
    assert sorted(dataset.docs) == ["c0", "c1", "c2", "c3"] and len(dataset.queries) == 4  # judged docs kept first
    result = eval_run(settings, "--dataset", str(root), "--corpus", str(root / "corpus.jsonl"), "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["queries"] == 12 and report["metrics"]["ndcg@10"] == 1.0
    assert report["collection"].startswith("eval_")
    names = IndexCatalog(live_store.client, settings.collection).client.list_collections()
    assert report["collection"] not in names  # the scratch collection is dropped
