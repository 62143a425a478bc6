"""File ingestion: scan → plan changes against the manifest → run stages → finalise the manifest.

Change detection: a file whose size and mtime match the manifest is skipped without reading; otherwise
its SHA-256 decides. A changed file's new chunks are upserted, then its stale chunk ids deleted; a file
gone from disk (within the same selection) loses its chunks and its manifest row.

A bad entry (a symlink out of the allowed roots, a broken symlink, an unreadable or special file) is a
per-file error on the job; the other files are ingested and whatever was stored for the bad one is kept.

With a source ACL map (``RAG_SOURCE_ACL_MAP``, ``rag_ray.ingest.source_acl``) each file's ACL comes from its owner,
group and mode. A file whose content is unchanged but whose ACL is not (a chmod/chgrp, a new map or request ACL) is
re-stamped: its chunks' ACL fields are rewritten, nothing is parsed or embedded again.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from rag_ray.access.sharing import set_document_acl
from rag_ray.errors import InvalidInput
from rag_ray.ingest.controls import ControlledStages
from rag_ray.ingest.executor import Executor, LeveledStages, ResultHandler, StageFactories
from rag_ray.ingest.rows import KIND_CHUNK, KIND_ERROR
from rag_ray.ingest.scan import FileEntry, FileSelection, Rejected, file_sha256, make_selection, scan_files
from rag_ray.ingest.source_acl import SourceAclMap
from rag_ray.ingest.stages import check_enrichment_level
from rag_ray.ingest.tracking import JobStore, JobTracker, ProgressListener, run_tracked
from rag_ray.metadata import DocumentRecord, MetadataDB
from rag_ray.sources.files import SUPPORTED_TYPES
from rag_ray.store.filters import literal
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, make_doc_id

log = logging.getLogger(__name__)


@dataclass
class FileIngestRequest:
    path: Path
    recursive: bool = True
    file_types: Sequence[str] | None = None
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    acl: Acl = field(default_factory=Acl)
    only_changed: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    callback_url: str | None = None
    enrichment_level: str | None = None  # off | basic | standard | comprehensive; None: the configured level
    acl_from_source: bool = True  # the ingestor's source ACL map applies (uploads: False, they are the uploader's)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "recursive": self.recursive, "file_types": list(self.file_types or []),
                "include": list(self.include), "exclude": list(self.exclude), "owner_id": self.acl.owner_id,
                "group_ids": list(self.acl.group_ids), "visibility": self.acl.visibility,
                "only_changed": self.only_changed, "callback": bool(self.callback_url),
                "enrichment_level": self.enrichment_level, "acl_from_source": self.acl_from_source}


@dataclass
class IngestSummary:
    job_id: str
    status: str
    files_seen: int = 0
    files_processed: int = 0
    files_skipped: int = 0
    files_deleted: int = 0
    files_restamped: int = 0  # content unchanged, ACL changed: only the ACL fields rewritten
    chunks_written: int = 0
    chunks_deleted: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Plan:
    process: list[tuple[FileEntry, str]]  # (entry, sha256)
    skipped: list[FileEntry]
    touched: list[tuple[FileEntry, str]]  # unchanged content, new mtime: refresh the manifest only
    deleted: list[DocumentRecord]
    replaced: set[str] = field(default_factory=set)  # doc ids already in the manifest: may leave stale chunks
    failed: list[Rejected] = field(default_factory=list)  # per-file errors: not ingested, nothing deleted
    acls: dict[str, Acl] = field(default_factory=dict)  # path → the ACL its chunks get
    restamp: list[tuple[str, Acl]] = field(default_factory=list)  # (doc id, new ACL) of unchanged content


@dataclass
class _DocResult:
    ids: set[str] = field(default_factory=set)
    expected: int = 0
    kind: str = KIND_CHUNK
    error: str = ""


class FileIngestor:
    def __init__(self, db: MetadataDB, store: ChunkStore, executor: Executor, stages: StageFactories, *,
                 allowed_roots: Sequence[Path] | None = None, source_acl: SourceAclMap | None = None):
        self.db = db
        self.store = store
        self.executor = executor
        self.stages = stages
        self.allowed_roots = allowed_roots
        self.source_acl = source_acl  # files' ACLs from their owner/group/mode (RAG_SOURCE_ACL_MAP)
        self.jobs = JobStore(db)

    def submit(self, request: FileIngestRequest, created_by: str = "system") -> str:
        """Create the job record (status pending); ``run`` executes it."""
        self.selection(request)  # validate early: a bad path fails before a job exists
        return self.jobs.create("files", request.describe(), created_by=created_by)

    def selection(self, request: FileIngestRequest) -> FileSelection:
        if request.enrichment_level is not None:
            check_enrichment_level(request.enrichment_level)
        return make_selection(request.path, recursive=request.recursive, file_types=request.file_types,
                              include=request.include, exclude=request.exclude, supported=SUPPORTED_TYPES,
                              roots=self.allowed_roots)

    def run(self, request: FileIngestRequest, job_id: str | None = None,
            listeners: list[ProgressListener] | None = None) -> IngestSummary:
        job_id = job_id or self.submit(request)
        tracker = JobTracker(self.jobs, job_id, listeners)
        summary = IngestSummary(job_id=job_id, status="running")
        run_tracked(tracker, summary, lambda: self._run(request, tracker, summary), lambda: _message(summary))
        return summary

    def _run(self, request: FileIngestRequest, tracker: JobTracker, summary: IngestSummary) -> None:
        selection = self.selection(request)
        scan = scan_files(selection, self.allowed_roots)
        entries = scan.entries
        if not entries and not scan.rejected and selection.root.is_dir() and not self._in_scope(selection):
            raise InvalidInput(f"no {'/'.join(sorted(selection.types))} files under {selection.root}", field="path")
        plan = self._plan(entries, selection, request, scan.rejected)
        summary.files_seen = len(entries)
        summary.files_skipped = len(plan.skipped)
        tracker.start(len(plan.process) + len(plan.skipped) + len(plan.failed), skipped=len(plan.skipped))
        for bad in plan.failed:
            tracker.error(str(bad.path), bad.reason)
        summary.files_deleted, summary.chunks_deleted = self._delete_docs(plan.deleted)
        tracker.progress.items_deleted = summary.files_deleted
        self._touch(plan.touched)
        summary.files_restamped = self._restamp(plan.restamp)
        if plan.process:
            tasks = [self._task(entry, digest, request, plan.acls.get(str(entry.path))) for entry, digest in
                     plan.process]
            results: dict[str, _DocResult] = defaultdict(_DocResult)
            try:
                self._execute(tasks, request, tracker, results)
                tracker.raise_if_ended()  # cancelled or stopped: the stages skipped the rest, the pipeline drained
            except BaseException:
                self._settle(plan, results, request, tracker, summary)
                raise
            finally:
                self.store.seal_and_warm()
            self._finalise(plan, results, request, tracker, summary)

    # ---- planning ----
    def _in_scope(self, selection: FileSelection) -> list[DocumentRecord]:
        with self.db.session() as s:
            records = list(s.scalars(select(DocumentRecord).where(DocumentRecord.source_type == "file")))
        return [r for r in records if selection.matches(Path(r.source_uri))]

    def _plan(self, entries: list[FileEntry], selection: FileSelection, request: FileIngestRequest,
              rejected: list[Rejected]) -> _Plan:
        known = {r.source_uri: r for r in self._in_scope(selection)}
        plan = _Plan([], [], [], [], failed=list(rejected))
        mapping = self.source_acl.resolved(self.db) if self.source_acl and request.acl_from_source else None
        for bad in rejected:  # still on disk, just unusable now: keep what was stored for it
            for key in _manifest_keys(bad.path):
                known.pop(key, None)
        for entry in entries:
            record = known.pop(str(entry.path), None)
            try:
                acl = mapping.acl_for(entry.path, request.acl) if mapping else request.acl
            except OSError as exc:  # gone since the scan
                plan.failed.append(Rejected(entry.path, exc.strerror or type(exc).__name__))
                continue
            plan.acls[str(entry.path)] = acl
            same_acl = record is not None and _acl_of(record) == acl
            if request.only_changed and record and (record.size_bytes, record.mtime_ns) == (
                    entry.size, entry.mtime_ns) and record.content_hash:
                plan.skipped.append(entry)
                if not same_acl:
                    plan.restamp.append((record.doc_id, acl))
                continue
            try:
                digest = file_sha256(entry.path)
            except OSError as exc:  # unreadable, or gone since the scan
                plan.failed.append(Rejected(entry.path, exc.strerror or type(exc).__name__))
                continue
            if request.only_changed and record and record.content_hash == digest:
                plan.skipped.append(entry)
                plan.touched.append((entry, digest))
                if not same_acl:
                    plan.restamp.append((record.doc_id, acl))
            else:
                plan.process.append((entry, digest))
                if record is not None:
                    plan.replaced.add(record.doc_id)
        plan.deleted = list(known.values())
        return plan

    def _task(self, entry: FileEntry, digest: str, request: FileIngestRequest, acl: Acl | None = None
              ) -> dict[str, Any]:
        uri, acl = str(entry.path), acl or request.acl
        return {"path": uri, "doc_id": make_doc_id(uri), "source_uri": uri, "content_hash": digest,
                "owner_id": acl.owner_id, "group_ids_json": json.dumps(list(acl.group_ids)),
                "visibility": acl.visibility, "metadata_json": json.dumps(request.metadata, default=str)}

    def _restamp(self, changes: list[tuple[str, Acl]]) -> int:
        """Rewrite the ACL of documents whose content did not change (manifest and chunks; no re-embedding)."""
        for doc_id, acl in changes:
            set_document_acl(self.db, self.store, doc_id, acl)
        return len(changes)

    # ---- execution ----
    def _execute(self, tasks: list[dict[str, Any]], request: FileIngestRequest, tracker: JobTracker,
                 results: dict[str, _DocResult]) -> None:
        uri_of = {t["doc_id"]: t["source_uri"] for t in tasks}

        def on_results(batch: dict[str, list[Any]]) -> None:
            chunks = 0
            finished: list[str] = []  # in the order the pipeline completed them (batch_config.processing_strategy)
            for kind, chunk_id, doc_id, n_chunks, error in zip(batch["kind"], batch["id"], batch["doc_id"],
                                                              batch["n_chunks"], batch["error"], strict=True):
                doc = results[doc_id]
                doc.kind = kind
                if kind == KIND_CHUNK:
                    doc.ids.add(chunk_id)
                    doc.expected = int(n_chunks)
                    chunks += 1
                    if len(doc.ids) == doc.expected:
                        finished.append(uri_of.get(doc_id, doc_id))
                elif kind == KIND_ERROR:
                    doc.error = error
                    tracker.error(uri_of.get(doc_id, doc_id), error)
                else:
                    finished.append(uri_of.get(doc_id, doc_id))
            tracker.completed(finished, batch_sizes=batch.get("embed_batch_size", ()))
            tracker.add(items=len(finished), chunks=chunks)

        handler: ResultHandler = on_results
        # pause and cancel are obeyed by the stages themselves, before each file and batch (rag_ray.ingest.controls)
        stages = ControlledStages(LeveledStages(self.stages, request.enrichment_level), tracker.control())
        self.executor.run(tasks, stages, handler, tracker.flush)

    def _finalise(self, plan: _Plan, results: dict[str, _DocResult], request: FileIngestRequest,
                  tracker: JobTracker, summary: IngestSummary, *, ended: bool = False) -> None:
        """Record the documents written in full (and drop their stale chunks). ``ended``: the job was cancelled or
        stopped, documents it did not finish are ``_settle``'s, not per-file errors."""
        done: list[tuple[FileEntry, str, str, int]] = []
        for entry, digest in plan.process:
            doc_id = make_doc_id(str(entry.path))
            result = results.get(doc_id)
            if result is None or result.kind == KIND_ERROR:
                continue  # keep whatever was stored before: a broken new version loses nothing
            if result.kind == KIND_CHUNK and len(result.ids) != result.expected:
                if not ended:
                    tracker.error(str(entry.path), f"only {len(result.ids)} of {result.expected} chunks were written")
                continue
            if doc_id in plan.replaced:  # a new document has no stale chunks: skip the per-document query
                summary.chunks_deleted += self._delete_stale(doc_id, result.ids)
            summary.chunks_written += len(result.ids)
            summary.files_processed += 1
            done.append((entry, digest, doc_id, len(result.ids)))
        self._save_records(done, request, tracker.job_id, plan.acls)

    def _settle(self, plan: _Plan, results: dict[str, _DocResult], request: FileIngestRequest, tracker: JobTracker,
                summary: IngestSummary) -> None:
        """After a cancel or stop: every document fully written or not at all. Documents the job wrote in full are
        recorded as on success; one it wrote in part loses its chunks and its manifest row (the next ingest writes
        it again); documents it did not reach keep what was stored before."""
        try:
            self._finalise(plan, results, request, tracker, summary, ended=True)
            partial = [d for d, r in results.items() if r.kind == KIND_CHUNK and r.ids and len(r.ids) != r.expected]
            self._remove_docs(partial)
        except Exception as exc:  # the job's own ending is what the caller must see
            log.warning("job %s: could not settle partly written documents: %s", tracker.job_id,
                        type(exc).__name__)

    def _remove_docs(self, doc_ids: list[str]) -> None:
        """All chunks and the manifest rows of ``doc_ids``."""
        for doc_id in doc_ids:
            self.store.delete_ids(self.store.ids_where(f"doc_id == {literal(doc_id)}"))
        if doc_ids:
            with self.db.session() as s:
                s.execute(delete(DocumentRecord).where(DocumentRecord.doc_id.in_(doc_ids)))

    def _delete_stale(self, doc_id: str, keep: set[str]) -> int:
        stale = self.store.ids_where(f"doc_id == {literal(doc_id)}") - keep
        if stale:
            self.store.delete_ids(stale)
        return len(stale)

    def _delete_docs(self, records: list[DocumentRecord]) -> tuple[int, int]:
        chunks = 0
        for record in records:
            ids = self.store.ids_where(f"doc_id == {literal(record.doc_id)}")
            self.store.delete_ids(ids)
            chunks += len(ids)
        if records:
            with self.db.session() as s:
                for record in records:
                    obj = s.get(DocumentRecord, record.doc_id)
                    if obj is not None:
                        s.delete(obj)
        return len(records), chunks

    def _touch(self, touched: list[tuple[FileEntry, str]]) -> None:
        if not touched:
            return
        with self.db.session() as s:
            for entry, _digest in touched:
                rec = s.get(DocumentRecord, make_doc_id(str(entry.path)))
                if rec is not None:
                    rec.mtime_ns, rec.size_bytes = entry.mtime_ns, entry.size

    def _save_records(self, done: list[tuple[FileEntry, str, str, int]], request: FileIngestRequest,
                      job_id: str, acls: dict[str, Acl] | None = None) -> None:
        """One transaction for the whole manifest update (a commit per file dominated large ingests)."""
        with self.db.session() as s:
            for entry, digest, doc_id, n_chunks in done:
                rec = s.get(DocumentRecord, doc_id) or DocumentRecord(doc_id=doc_id)
                rec.source_uri, rec.source_type, rec.file_type = str(entry.path), "file", entry.file_type
                rec.source_name = str(request.metadata.get("source_name", ""))
                rec.content_hash, rec.size_bytes, rec.mtime_ns = digest, entry.size, entry.mtime_ns
                rec.chunk_count, rec.job_id = n_chunks, job_id
                acl = (acls or {}).get(str(entry.path), request.acl)
                rec.owner_id, rec.group_ids, rec.visibility = acl.owner_id, list(acl.group_ids), acl.visibility
                rec.metadata_json = {"file_name": entry.path.name}
                s.add(rec)


def _manifest_keys(path: Path) -> set[str]:
    """The manifest source URIs ``path`` may be stored under: itself and, when it resolves, its target."""
    keys = {str(path)}
    with contextlib.suppress(OSError, RuntimeError):  # RuntimeError: a symlink loop
        keys.add(str(path.resolve()))
    return keys


def _acl_of(record: DocumentRecord) -> Acl:
    return Acl(record.owner_id, tuple(record.group_ids or ()), record.visibility)  # type: ignore[arg-type]


def _message(summary: IngestSummary) -> str:
    return (f"{summary.files_processed} files ingested ({summary.chunks_written} chunks), {summary.files_skipped} "
            f"unchanged, {summary.files_deleted} removed, {len(summary.errors)} errors")
