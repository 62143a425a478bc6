"""File ingest jobs started from the API: validate, record the job, launch it in the background.

The launcher decides where the job runs: a Ray task on the cluster (Serve) or a thread (tests, no Ray).
Uploaded files are stored under ``<data_dir>/uploads/<owner>/`` and ingested for their owner.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select

from rag_ray.config import Settings
from rag_ray.errors import InvalidInput, NotFound, PayloadTooLarge
from rag_ray.ingest.admission import JobQueue, run_admitted
from rag_ray.ingest.file_ingest import FileIngestRequest
from rag_ray.ingest.scan import make_selection
from rag_ray.ingest.tracking import JobLimits, JobStore
from rag_ray.metadata import DocumentRecord, MetadataDB
from rag_ray.sources.files import SUPPORTED_TYPES
from rag_ray.store.filters import literal
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Principal

FileJobRunner = Callable[[Settings, FileIngestRequest, str, bool], Any]
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._\-가-힣]+")


class Launcher(Protocol):
    def __call__(self, fn: Callable[..., Any], *args: Any) -> None: ...


def thread_launcher(fn: Callable[..., Any], *args: Any) -> None:
    threading.Thread(target=fn, args=args, daemon=True, name="rag-job").start()


class FileJobService:
    def __init__(self, settings: Settings, db: MetadataDB, store: ChunkStore, runner: FileJobRunner,
                 launcher: Launcher = thread_launcher):
        self.settings = settings
        self.db = db
        self.store = store
        self.runner = runner
        self.launcher = launcher
        self.jobs = JobStore(db, JobLimits.from_settings(settings))
        self.queue = JobQueue(self.jobs)

    def submit(self, request: FileIngestRequest, principal: Principal, *, confine: bool = True,
               overrides: dict[str, Any] | None = None) -> str:
        """Validate now (bad paths fail the request, not the job), record the job (queued), launch it once admitted
        (``RAG_JOBS_MAX_CONCURRENT``, ``RAG_JOBS_MAX_PER_USER``)."""
        roots = self.settings.resolved_allowed_roots if confine else None
        make_selection(request.path, recursive=request.recursive, file_types=request.file_types,
                       include=request.include, exclude=request.exclude, supported=SUPPORTED_TYPES, roots=roots)
        job_id = self.jobs.create("files", request.describe(), created_by=principal.user_id)
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        self.queue.submit(job_id, lambda: self.launcher(run_admitted, settings, job_id, self.runner, settings, request,
                                                        job_id, confine))
        return job_id

    def save_upload(self, principal: Principal, file_name: str, data: bytes) -> Path:
        if len(data) > self.settings.max_upload_bytes:
            raise PayloadTooLarge(f"upload exceeds {self.settings.max_upload_bytes} bytes", field="file")
        name = _SAFE_NAME.sub("_", Path(file_name or "").name).strip("._")
        suffix = Path(name).suffix.lower().lstrip(".")
        if not name or suffix not in SUPPORTED_TYPES:
            raise InvalidInput(f"file type {suffix or '(none)'!r} is not supported; supported: "
                               f"{sorted(SUPPORTED_TYPES)}", field="file")
        if not data:
            raise InvalidInput("the uploaded file is empty", field="file")
        owner_dir = self.upload_root / hashlib.sha256(principal.user_id.encode()).hexdigest()[:16]
        target = owner_dir / hashlib.sha256(data).hexdigest()[:12] / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    @property
    def upload_root(self) -> Path:
        return self.settings.resolved_data_dir / "uploads"

    # ---- documents of a caller ----
    def list_documents(self, principal: Principal, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        with self.db.session() as s:
            query = select(DocumentRecord).order_by(DocumentRecord.created_at.desc()).limit(limit).offset(offset)
            if not principal.is_admin:
                query = query.where(DocumentRecord.owner_id == principal.user_id)
            return [_doc_dict(r) for r in s.scalars(query)]

    def get_document(self, principal: Principal, doc_id: str) -> dict[str, Any]:
        with self.db.session() as s:
            return _doc_dict(self._owned(s, principal, doc_id))

    def delete_document(self, principal: Principal, doc_id: str) -> int:
        with self.db.session() as s:
            record = self._owned(s, principal, doc_id)
            path = Path(record.source_uri)
            s.delete(record)
        ids = self.store.ids_where(f"doc_id == {literal(doc_id)}")
        self.store.delete_ids(ids)
        if path.is_relative_to(self.upload_root) and path.exists():
            path.unlink()
        return len(ids)

    @staticmethod
    def _owned(session: Any, principal: Principal, doc_id: str) -> DocumentRecord:
        query = select(DocumentRecord).where(DocumentRecord.doc_id == doc_id)
        if not principal.is_admin:
            query = query.where(DocumentRecord.owner_id == principal.user_id)
        record = session.scalars(query).first()
        if record is None:  # someone else's document answers exactly like a missing one
            raise NotFound(f"document {doc_id!r} not found", field="doc_id")
        return record


def upload_request(path: Path, principal: Principal, group_ids: tuple[str, ...], visibility: str) -> FileIngestRequest:
    return FileIngestRequest(path=path, recursive=False, acl=Acl(principal.user_id, group_ids, visibility),  # type: ignore[arg-type]
                             metadata={"uploaded_by": principal.user_id},
                             acl_from_source=False)  # the uploader's ACL, never the stored file's owner/mode


def _doc_dict(record: DocumentRecord) -> dict[str, Any]:
    return {"doc_id": record.doc_id, "source": record.source_uri, "source_type": record.source_type,
            "file_type": record.file_type, "chunks": record.chunk_count, "size_bytes": record.size_bytes,
            "owner_id": record.owner_id, "group_ids": list(record.group_ids or []), "visibility": record.visibility,
            "created_at": record.created_at.isoformat() if record.created_at else None,
            "updated_at": record.updated_at.isoformat() if record.updated_at else None}
