"""Job records: progress counters, per-item errors, and pause/resume/cancel control."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select

from rag_ray.errors import Conflict, JobError, NotFound, RagError
from rag_ray.metadata import JobErrorRecord, JobRecord, MetadataDB

ACTIVE = ("pending", "running", "paused")
MAX_ERRORS_RECORDED = 1000


class JobCancelled(JobError):
    code = "job_cancelled"


@dataclass
class JobProgress:
    job_id: str
    kind: str
    status: str
    items_total: int = 0
    items_done: int = 0
    items_skipped: int = 0
    items_deleted: int = 0
    chunks_done: int = 0
    errors_count: int = 0
    elapsed_s: float = 0.0
    message: str = ""
    finished_at: str | None = None  # set when the driver has stopped (a cancel request alone does not)
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def rate_items_per_s(self) -> float:
        return self.items_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def rate_chunks_per_s(self) -> float:
        return self.chunks_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        remaining = self.items_total - self.items_done - self.items_skipped
        rate = self.rate_items_per_s
        if remaining <= 0:
            return 0.0
        return remaining / rate if rate > 0 else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(rate_items_per_s=round(self.rate_items_per_s, 3),
                    rate_chunks_per_s=round(self.rate_chunks_per_s, 3),
                    eta_s=None if self.eta_s is None else round(self.eta_s, 1))
        return data


ProgressListener = Callable[[JobProgress], None]


def new_job_id() -> str:
    return uuid.uuid4().hex


def record_to_progress(rec: JobRecord, errors: list[JobErrorRecord] | None = None) -> JobProgress:
    start = rec.started_at or rec.created_at
    end = rec.finished_at or datetime.now(UTC)
    elapsed = (_aware(end) - _aware(start)).total_seconds() if start else 0.0
    return JobProgress(job_id=rec.job_id, kind=rec.kind, status=rec.status, items_total=rec.items_total,
                       items_done=rec.items_done, items_skipped=rec.items_skipped, items_deleted=rec.items_deleted,
                       chunks_done=rec.chunks_done, errors_count=rec.errors_count, elapsed_s=max(elapsed, 0.0),
                       message=rec.message, finished_at=rec.finished_at.isoformat() if rec.finished_at else None,
                       errors=[{"item": e.item, "error": e.error} for e in (errors or [])])


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class JobStore:
    """CRUD over job records, shared by the job driver and the jobs API."""

    def __init__(self, db: MetadataDB):
        self.db = db

    def create(self, kind: str, params: dict[str, Any], created_by: str = "system", job_id: str | None = None) -> str:
        job_id = job_id or new_job_id()
        with self.db.session() as s:
            s.add(JobRecord(job_id=job_id, kind=kind, status="pending", params=params, created_by=created_by))
        return job_id

    def get(self, job_id: str, *, with_errors: bool = True) -> JobProgress:
        with self.db.session() as s:
            rec = s.get(JobRecord, job_id)
            if rec is None:
                raise NotFound(f"job {job_id!r} not found", field="job_id")
            errors = list(s.scalars(select(JobErrorRecord).where(JobErrorRecord.job_id == job_id)
                                    .order_by(JobErrorRecord.id).limit(200))) if with_errors else []
            return record_to_progress(rec, errors)

    def owner(self, job_id: str) -> str:
        with self.db.session() as s:
            rec = s.get(JobRecord, job_id)
            if rec is None:
                raise NotFound(f"job {job_id!r} not found", field="job_id")
            return rec.created_by

    def list(self, limit: int = 50, created_by: str | None = None) -> list[JobProgress]:
        with self.db.session() as s:
            query = select(JobRecord).order_by(JobRecord.created_at.desc()).limit(limit)
            if created_by:
                query = query.where(JobRecord.created_by == created_by)
            return [record_to_progress(r) for r in s.scalars(query)]

    def status(self, job_id: str) -> str:
        with self.db.session() as s:
            rec = s.get(JobRecord, job_id)
            if rec is None:
                raise NotFound(f"job {job_id!r} not found", field="job_id")
            return rec.status

    def set_status(self, job_id: str, status: str, *, allowed_from: tuple[str, ...] | None = None,
                   message: str | None = None, finished: bool = False) -> None:
        with self.db.session() as s:
            rec = s.get(JobRecord, job_id)
            if rec is None:
                raise NotFound(f"job {job_id!r} not found", field="job_id")
            if allowed_from is not None and rec.status not in allowed_from:
                raise Conflict(f"job {job_id} is {rec.status}; cannot change it to {status}", field="status")
            rec.status = status
            if message is not None:
                rec.message = message
            now = datetime.now(UTC)
            if status == "running" and rec.started_at is None:
                rec.started_at = now
            if finished:
                rec.finished_at = now

    # control requests from the API / CLI
    def pause(self, job_id: str) -> None:
        self.set_status(job_id, "paused", allowed_from=("pending", "running"))

    def resume(self, job_id: str) -> None:
        self.set_status(job_id, "running", allowed_from=("paused",))

    def cancel(self, job_id: str) -> None:
        self.set_status(job_id, "cancelled", allowed_from=ACTIVE)


class JobTracker:
    """Used by a job driver: counts progress, records errors, honours pause/cancel between batches."""

    def __init__(self, jobs: JobStore, job_id: str, listeners: list[ProgressListener] | None = None,
                 flush_every_s: float = 0.5):
        self.jobs = jobs
        self.job_id = job_id
        self.listeners = list(listeners or [])
        self.flush_every_s = flush_every_s
        self._started = time.monotonic()
        self._last_flush = 0.0
        self._lock = threading.Lock()
        rec = jobs.get(job_id, with_errors=False)
        self.progress = JobProgress(job_id=job_id, kind=rec.kind, status="running")

    def start(self, items_total: int, skipped: int = 0, deleted: int = 0) -> None:
        self.jobs.set_status(self.job_id, "running", allowed_from=("pending", "running"))
        self.progress.items_total = items_total
        self.progress.items_skipped = skipped
        self.progress.items_deleted = deleted
        self.flush(force=True)

    def add(self, *, items: int = 0, chunks: int = 0) -> None:
        with self._lock:
            self.progress.items_done += items
            self.progress.chunks_done += chunks
        self.flush()

    def error(self, item: str, message: str) -> None:
        with self._lock:
            self.progress.errors_count += 1
            self.progress.items_done += 1
            record = self.progress.errors_count <= MAX_ERRORS_RECORDED
        if record:
            with self.jobs.db.session() as s:
                s.add(JobErrorRecord(job_id=self.job_id, item=item[:2048], error=message[:4000]))
        self.progress.errors.append({"item": item, "error": message})
        self.flush()

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < self.flush_every_s:
            return
        self._last_flush = now
        self.progress.elapsed_s = now - self._started
        with self.jobs.db.session() as s:
            rec = s.get(JobRecord, self.job_id)
            if rec is not None:
                for name in ("items_total", "items_done", "items_skipped", "items_deleted", "chunks_done",
                             "errors_count"):
                    setattr(rec, name, getattr(self.progress, name))
        for listener in self.listeners:
            listener(self.progress)

    def checkpoint(self, poll_s: float = 0.2) -> None:
        """Between batches: raise JobCancelled if cancelled; block while paused (back-pressure)."""
        while True:
            status = self.jobs.status(self.job_id)
            if status == "cancelled":
                raise JobCancelled(f"job {self.job_id} was cancelled")
            if status != "paused":
                return
            self.progress.status = "paused"
            self.flush(force=True)
            time.sleep(poll_s)  # polling the DB is the only signal a paused job gets

    def finish(self, status: str, message: str = "") -> None:
        self.progress.status = status
        self.progress.message = message
        self.flush(force=True)
        current = self.jobs.status(self.job_id)
        final = status if current != "cancelled" else "cancelled"
        self.jobs.set_status(self.job_id, final, message=message if final == status else "cancelled by request",
                             finished=True)


class JobSummary(Protocol):
    status: str
    duration_s: float
    errors: list[dict[str, str]]


def run_tracked(tracker: JobTracker, summary: JobSummary, work: Callable[[], None], message: Callable[[], str],
                describe_error: Callable[[Exception], str] = str) -> None:
    """Run a job body and record how it ended, on the job record and on ``summary``.

    Cancellation ends the job quietly; any other error marks it failed and propagates."""
    started = time.monotonic()
    try:
        work()
        summary.status = "succeeded"
        tracker.finish("succeeded", message())
    except JobCancelled:
        summary.status = "cancelled"
        tracker.finish("cancelled", "cancelled by request")
    except RagError as exc:
        summary.status = "failed"
        tracker.finish("failed", exc.message)
        raise
    except Exception as exc:
        summary.status = "failed"
        tracker.finish("failed", f"{type(exc).__name__}: {describe_error(exc)}")
        raise
    finally:
        summary.duration_s = time.monotonic() - started
        summary.errors = list(tracker.progress.errors)
