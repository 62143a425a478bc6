"""Store status and clean-up shared by the CLI and the admin API."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from rag_ray.enrich import ENRICHED_KEYS
from rag_ray.errors import InvalidInput
from rag_ray.ingest.stages import EnrichChunks, check_enrichment_level
from rag_ray.ingest.tracking import JobStore
from rag_ray.metadata import DocumentRecord, JobErrorRecord, JobRecord, MetadataDB
from rag_ray.store.filters import FilterClause, literal, literal_list, render_clause
from rag_ray.store.milvus import ChunkStore


@dataclass
class StoreStatus:
    documents: int
    chunks: int
    documents_by_type: dict[str, int]
    last_job: dict[str, Any] | None
    failed_items: list[dict[str, str]] = field(default_factory=list)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)  # label → value → chunks, whole store
    labels_by_source: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # source_uri → labels

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def store_status(db: MetadataDB, store: ChunkStore) -> StoreStatus:
    with db.session() as s:
        documents = s.scalar(select(func.count()).select_from(DocumentRecord)) or 0
        by_type = dict(s.execute(select(DocumentRecord.file_type, func.count()).group_by(DocumentRecord.file_type))
                       .tuples().all())
        last = s.scalars(select(JobRecord).order_by(JobRecord.created_at.desc()).limit(1)).first()
        errors = []
        if last is not None:
            errors = [{"item": e.item, "error": e.error} for e in s.scalars(
                select(JobErrorRecord).where(JobErrorRecord.job_id == last.job_id).limit(100))]
    last_job = JobStore(db).get(last.job_id, with_errors=False).to_dict() if last is not None else None
    by_source = label_counts(store)
    return StoreStatus(documents=documents, chunks=store.count(), documents_by_type={k or "": v for k, v in
                                                                                        by_type.items()},
                       last_job=last_job, failed_items=errors, labels=_total(by_source.values()),
                       labels_by_source=by_source)


# ---- enrichment labels ----
UNLABELLED = "-"  # a chunk ingested without enrichment (or before it existed): `rag-cli data enrich` labels it


def label_counts(store: ChunkStore, expr: str = "") -> dict[str, dict[str, dict[str, int]]]:
    """source_uri → {"sensitivity"|"language"|"pii_types" → value → chunks} over the chunks matching ``expr``."""
    out: dict[str, dict[str, Counter[str]]] = {}
    for row in store.query(expr, ("id", "source_uri", "sensitivity", "metadata")):
        counts = out.setdefault(row["source_uri"], {"sensitivity": Counter(), "language": Counter(),
                                                    "pii_types": Counter()})
        meta = row.get("metadata") or {}
        counts["sensitivity"][str(row.get("sensitivity") or "public")] += 1
        counts["language"][str(meta.get("language", UNLABELLED))] += 1
        counts["pii_types"].update(str(t) for t in meta.get("pii_types") or ())
    return {src: {label: dict(c) for label, c in labels.items()} for src, labels in sorted(out.items())}


def _total(per_source: Iterable[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    total: dict[str, Counter[str]] = {"sensitivity": Counter(), "language": Counter(), "pii_types": Counter()}
    for labels in per_source:
        for label, counts in labels.items():
            total[label].update(counts)
    return {label: dict(c) for label, c in total.items()}


@dataclass
class RelabelReport:
    source: str
    level: str
    chunks: int = 0
    changed: int = 0  # chunks whose labels differ from before
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


RelabelProgress = Callable[[int, int], None]  # (chunks done, chunks total)
_RELABEL_BATCH = 256  # one ``id in [...]`` list (filters.MAX_IN_VALUES)


def source_expr(source: str) -> str:
    """Chunks of one document (its doc id, or its exact source) or of every source under a path prefix."""
    if not source:
        raise InvalidInput("say which source to relabel: a path prefix or a document id", field="source")
    return f"doc_id == {literal(source)} or {render_clause(FilterClause('source', 'prefix', source))}"


def relabel_chunks(store: ChunkStore, source: str, level: str = "standard", *, reset: bool = False,
                   progress: RelabelProgress | None = None) -> RelabelReport:
    """Re-run enrichment on stored chunks of ``source`` and write the labels back — vectors are read and written
    unchanged, nothing is re-embedded. Without ``reset`` labels merge as at ingest (a sensitivity is never
    lowered); with it, the old labels are dropped first, so a relaxed rule set can lower one."""
    report = RelabelReport(source, check_enrichment_level(level))
    started = time.monotonic()
    ids = sorted(store.ids_where(source_expr(source)))
    stage, fields = EnrichChunks(level), _row_fields(store)
    for start in range(0, len(ids), _RELABEL_BATCH):
        rows = store.query(f"id in {literal_list(ids[start:start + _RELABEL_BATCH])}", fields)
        report.changed += _relabel_rows(stage, rows, reset)
        store.upsert_rows(rows)
        report.chunks += len(rows)
        if progress is not None:
            progress(report.chunks, len(ids))
    report.duration_s = time.monotonic() - started
    return report


def _row_fields(store: ChunkStore) -> list[str]:
    """Every stored field but BM25 output: the rows go back through ``upsert_rows`` whole."""
    info = store.client.describe_collection(store.collection)
    return [f["name"] for f in info.get("fields", []) if f["name"] != "sparse"]


def _relabel_rows(stage: EnrichChunks, rows: list[dict[str, Any]], reset: bool) -> int:
    before = [dict(r.get("metadata") or {}) for r in rows]
    metadata = [_without_labels(m) if reset else m for m in before]
    batch = stage({"text": [r.get("text") or "" for r in rows], "metadata": metadata})
    now, changed = int(time.time()), 0
    for row, old, new in zip(rows, before, batch["metadata"], strict=True):
        changed += old != new
        row["metadata"] = new
        row["sensitivity"] = str(new.get("sensitivity", "public"))[:16]
        row["updated_at"] = now
    return changed


@dataclass
class CleanupReport:
    orphan_chunks: int = 0
    missing_files: int = 0
    missing_file_chunks: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def cleanup_orphans(db: MetadataDB, store: ChunkStore, *, dry_run: bool = False) -> CleanupReport:
    """Remove chunks whose document is not in the manifest, and manifest files that no longer exist."""
    report = CleanupReport()
    with db.session() as s:
        records = list(s.scalars(select(DocumentRecord)))
    known = {r.doc_id for r in records}
    stored = Counter(row["doc_id"] for row in store.query("", ("id", "doc_id")))
    orphan_docs = [d for d in stored if d not in known]
    report.orphan_chunks = sum(stored[d] for d in orphan_docs)
    missing = [r for r in records if r.source_type == "file" and not Path(r.source_uri).exists()]
    report.missing_files = len(missing)
    report.missing_file_chunks = sum(stored.get(r.doc_id, 0) for r in missing)
    if dry_run:
        return report
    for start in range(0, len(orphan_docs), 200):
        store.delete_where(f"doc_id in {literal_list(orphan_docs[start:start + 200])}")
    if missing:
        ids = [r.doc_id for r in missing]
        for start in range(0, len(ids), 200):
            store.delete_where(f"doc_id in {literal_list(ids[start:start + 200])}")
        with db.session() as s:
            for doc_id in ids:
                obj = s.get(DocumentRecord, doc_id)
                if obj is not None:
                    s.delete(obj)
    return report


def _without_labels(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k not in ENRICHED_KEYS}
