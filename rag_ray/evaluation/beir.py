"""BEIR-layout eval sets (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``, like ``../shared/data/scifact``)
and loading a corpus into a collection through the ingest stages.

Only judged queries are kept, only positive judgements count, and judgements of documents missing from a loaded
corpus are dropped (a capped corpus keeps every judged document first, so a quick run still has answers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_ray.embedding.base import Embedder
from rag_ray.errors import InvalidInput
from rag_ray.ingest.rows import CHUNK_COLUMNS, chunk_row, rows_to_columns
from rag_ray.ingest.stages import EmbedChunks, WriteChunks, chunk_document
from rag_ray.store.milvus import ChunkStore
from rag_ray.text.chunking import Chunker
from rag_ray.text.normalize import normalize_text
from rag_ray.types import Acl, ParsedDocument, make_doc_id

Qrels = dict[str, dict[str, int]]  # query id → corpus id → relevance grade (> 0)


@dataclass
class Dataset:
    name: str
    docs: dict[str, str]  # corpus id → document text (as ingest would see it); empty when no corpus was loaded
    queries: dict[str, str]
    qrels: Qrels = field(default_factory=dict)

    @property
    def judged(self) -> set[str]:
        return {d for rel in self.qrels.values() for d in rel}


def read_qrels(path: Path) -> Qrels:
    """``query-id<TAB>corpus-id<TAB>score`` lines after a header; only positive scores count."""
    qrels: Qrels = {}
    with _open(path, "qrels") as fh:
        next(fh, None)
        for number, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                raise InvalidInput(f"{path}:{number}: expected query-id, corpus-id and score separated by tabs",
                                   field="qrels")
            qid, doc_id, score = parts[0], parts[1], parts[2]
            if int(score) > 0:
                qrels.setdefault(qid, {})[doc_id] = int(score)
    return qrels


def read_queries(path: Path, only: set[str] | None = None) -> dict[str, str]:
    """``{"_id", "text"}`` per line; ``only``: keep these ids."""
    queries: dict[str, str] = {}
    with _open(path, "queries") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                if only is None or row["_id"] in only:
                    queries[row["_id"]] = row["text"]
    return queries


def read_corpus(path: Path, max_docs: int | None = None, keep_first: set[str] | None = None) -> dict[str, str]:
    """``{"_id", "title", "text"}`` per line → corpus id → ``title\\n\\ntext`` normalised as ingest would.
    ``max_docs`` caps the corpus, taking the ids in ``keep_first`` (the judged ones) first."""
    with _open(path, "corpus") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    if max_docs is not None:
        keep = keep_first or set()
        rows = ([r for r in rows if r["_id"] in keep] + [r for r in rows if r["_id"] not in keep])[:max_docs]
    docs: dict[str, str] = {}
    for row in rows:
        title = row.get("title") or ""
        docs[row["_id"]] = normalize_text(f"{title}\n\n{row['text']}" if title else row["text"])
    return docs


def load_eval_set(queries: Path, qrels: Path, corpus: Path | None = None, *, name: str | None = None,
                  max_docs: int | None = None) -> Dataset:
    """Judged queries with their judgements; with ``corpus``, its documents too (judgements restricted to them)."""
    judgements = read_qrels(qrels)
    docs = read_corpus(corpus, max_docs, {d for rel in judgements.values() for d in rel}) if corpus else {}
    if corpus is not None:
        judgements = {q: {d: s for d, s in rel.items() if d in docs} for q, rel in judgements.items()}
        judgements = {q: rel for q, rel in judgements.items() if rel}
    texts = read_queries(queries, set(judgements))
    judgements = {q: rel for q, rel in judgements.items() if q in texts}
    if not judgements:
        raise InvalidInput(f"no query of {queries} has a positive judgement in {qrels}", field="qrels")
    return Dataset(name or (corpus or queries).parent.name, docs, texts, judgements)


def load_dataset(root: Path, max_docs: int | None = None, split: str = "test") -> Dataset:
    """A BEIR directory: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""
    return load_eval_set(root / "queries.jsonl", root / "qrels" / f"{split}.tsv", root / "corpus.jsonl",
                         name=root.name, max_docs=max_docs)


def ingest_corpus(dataset: Dataset, store: ChunkStore, embedder: Embedder, chunk_size: int, chunk_overlap: int, *,
                  scheme: str = "beir", batch: int = 256) -> dict[str, str]:
    """chunk → embed → write with the pipeline's own stages (public, owned by ``system``, no enrichment);
    returns doc id → corpus id. Documents are stored under ``<scheme>://<dataset>/<corpus id>``."""
    chunker = Chunker(chunk_size, chunk_overlap)
    acl = Acl("system", (), "public")
    rows: list[dict[str, Any]] = []
    id_map: dict[str, str] = {}
    for corpus_id, text in dataset.docs.items():
        uri = f"{scheme}://{dataset.name}/{corpus_id}"
        doc_id = make_doc_id(uri)
        id_map[doc_id] = corpus_id
        chunks = chunk_document(ParsedDocument(uri, text), chunker, acl, doc_id=doc_id)
        rows.extend(chunk_row(c, len(chunks)) for c in chunks)
    embed, write = EmbedChunks(lambda: embedder), WriteChunks(lambda: store)
    for i in range(0, len(rows), batch):
        write(embed(rows_to_columns(rows[i:i + batch], CHUNK_COLUMNS)))
    store.flush()
    return id_map


def _open(path: Path, what: str) -> Any:
    try:
        return Path(path).open(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read the {what} file {path}: {exc.strerror or exc}", field=what) from exc
