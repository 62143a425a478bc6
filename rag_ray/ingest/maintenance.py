"""Store status and clean-up shared by the CLI and the admin API."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from rag_ray.ingest.tracking import JobStore
from rag_ray.metadata import DocumentRecord, JobErrorRecord, JobRecord, MetadataDB
from rag_ray.store.filters import literal_list
from rag_ray.store.milvus import ChunkStore


@dataclass
class StoreStatus:
    documents: int
    chunks: int
    documents_by_type: dict[str, int]
    last_job: dict[str, Any] | None
    failed_items: list[dict[str, str]] = field(default_factory=list)

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
    return StoreStatus(documents=documents, chunks=store.count(), documents_by_type={k or "": v for k, v in
                                                                                        by_type.items()},
                       last_job=last_job, failed_items=errors)


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
