"""Job records: progress counters, per-item errors, pause/resume/cancel control, and admission.

Lifecycle: ``queued`` → (admitted) ``pending`` → ``running`` ⇄ ``paused`` → ``succeeded`` | ``failed`` | ``cancelled``.
A job holds one of ``RAG_JOBS_MAX_CONCURRENT`` slots (and one of its owner's ``RAG_JOBS_MAX_PER_USER``) from
admission to its end. Admission is decided in the metadata DB, under a lock row, so it holds across processes
(Serve replicas, Ray task drivers, CLI runs): queued jobs are admitted first-come first-served, skipping only
jobs whose owner is at the per-user cap. Whoever holds a job — the queue that will launch it, or its driver —
refreshes its heartbeat; a job whose heartbeat is older than the lease is dead and is failed by the next admission.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import func, select, update

from rag_ray.errors import Conflict, JobError, NotFound, RagError
from rag_ray.metadata import JobAdmission, JobErrorRecord, JobRecord, MetadataDB
from rag_ray.observability.context import current_request_id

if TYPE_CHECKING:
    from rag_ray.config import Settings
    from rag_ray.ingest.controls import JobControl

log = logging.getLogger(__name__)
QUEUED = "queued"
ACTIVE = ("pending", "running", "paused")  # admitted: holds a slot
OPEN = (QUEUED, *ACTIVE)  # not finished
STOPPED = ("failed", "cancelled")  # ended by a request, a time limit or the sweeper: the driver must stop
MAX_ERRORS_RECORDED = 1000
ITEMS_KEPT = 100  # first items finished (and batch sizes) a job's progress lists
EXECUTION_KEY = "execution"  # the job params' entry holding those lists


class JobCancelled(JobError):
    code = "job_cancelled"


class JobStopped(JobError):
    """The job was ended from outside its driver (time limit, dead-driver sweep); ``message`` is the reason."""

    code = "job_stopped"


@dataclass(frozen=True)
class JobLimits:
    """Admission caps and time limits (``RAG_JOBS_*``); ``lease_s``/``heartbeat_s``/``stop_grace_s`` are internal."""

    max_concurrent: int = 2
    max_per_user: int = 1
    timeout_s: float = 3600.0  # overall, from admission; 0: none
    lease_s: float = 120.0  # a job whose holder has not refreshed its heartbeat for this long is dead
    heartbeat_s: float = 5.0
    stop_grace_s: float = 10.0  # after a stop (timeout, cancel): wait for the driver's checkpoint, then interrupt it
    poll_s: float = 0.2  # how often a queued job looks (one read) for a slot freed in another process

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> JobLimits:
        values: dict[str, Any] = {"max_concurrent": settings.jobs_max_concurrent,
                                  "max_per_user": settings.jobs_max_per_user, "timeout_s": settings.jobs_timeout_s}
        values.update(overrides)
        return cls(**values)

    def timeout_message(self) -> str:
        return f"timed out: the job ran longer than its {self.timeout_s:g} s limit (RAG_JOBS_TIMEOUT_S)"


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
    queue_position: int | None = None  # 1 = next to start; only while queued
    deadline_at: str | None = None  # when a running job will be stopped (RAG_JOBS_TIMEOUT_S)
    errors: list[dict[str, str]] = field(default_factory=list)
    # how the pipeline ran: the embedding batch sizes used, in order (adaptive batching moves them), and the first
    # items finished, in order (batch_config.processing_strategy)
    embed_batch_sizes: list[int] = field(default_factory=list)
    first_items: list[str] = field(default_factory=list)

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


def utcnow() -> datetime:
    return datetime.now(UTC)


def record_to_progress(rec: JobRecord, errors: list[JobErrorRecord] | None = None,
                       queue_position: int | None = None) -> JobProgress:
    start = rec.started_at or rec.created_at
    end = rec.finished_at or utcnow()
    elapsed = (_aware(end) - _aware(start)).total_seconds() if start else 0.0
    return JobProgress(job_id=rec.job_id, kind=rec.kind, status=rec.status, items_total=rec.items_total,
                       items_done=rec.items_done, items_skipped=rec.items_skipped, items_deleted=rec.items_deleted,
                       chunks_done=rec.chunks_done, errors_count=rec.errors_count, elapsed_s=max(elapsed, 0.0),
                       message=rec.message, finished_at=rec.finished_at.isoformat() if rec.finished_at else None,
                       queue_position=queue_position if rec.status == QUEUED else None,
                       deadline_at=_aware(rec.deadline_at).isoformat() if rec.deadline_at and rec.status in ACTIVE
                       else None,
                       errors=[{"item": e.item, "error": e.error} for e in (errors or [])],
                       **_execution(rec))


def _execution(rec: JobRecord) -> dict[str, list[Any]]:
    """``embed_batch_sizes`` and ``first_items``, kept in the job's params (``JobTracker.completed``)."""
    execution = (rec.params or {}).get(EXECUTION_KEY) or {}
    return {"embed_batch_sizes": list(execution.get("embed_batch_sizes", [])),
            "first_items": list(execution.get("first_items", []))}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---- in-process wake-ups: a slot freed (or a queued job cancelled) here is acted on at once; other processes
# notice within ``JobLimits.poll_s``
_slot_freed = threading.Condition()


def notify_slot_freed() -> None:
    with _slot_freed:
        _slot_freed.notify_all()


def wait_for_slot(timeout_s: float) -> bool:
    """Wait until a job of this process ends (True) or ``timeout_s`` passes (False)."""
    with _slot_freed:
        return _slot_freed.wait(timeout_s)


@dataclass
class Admission:
    admitted: list[str] = field(default_factory=list)  # queued → pending now, in queue order
    gone: list[str] = field(default_factory=list)  # no longer queued (cancelled, failed, started elsewhere)


class JobStore:
    """CRUD over job records, shared by the job drivers, the job queue and the jobs API."""

    def __init__(self, db: MetadataDB, limits: JobLimits | None = None):
        self.db = db
        self.limits = limits or JobLimits()

    def create(self, kind: str, params: dict[str, Any], created_by: str = "system", job_id: str | None = None) -> str:
        """A new job, queued: it runs once admitted (``admit``)."""
        job_id = job_id or new_job_id()
        request_id = current_request_id()
        if request_id:  # the HTTP request that created the job: the job's log lines carry it too
            params = {**params, "request_id": request_id}
        with self.db.session() as s:
            s.add(JobRecord(job_id=job_id, kind=kind, status=QUEUED, params=params, created_by=created_by,
                            created_at=utcnow(), heartbeat_at=utcnow()))
        log.info("job %s created: %s by %s", job_id, kind, created_by)
        return job_id

    def request_id(self, job_id: str) -> str | None:
        """The id of the HTTP request that created the job (None: created by the CLI or a job runner)."""
        with self.db.session() as s:
            value = (self._record(s, job_id).params or {}).get("request_id")
        return str(value) if value else None

    def get(self, job_id: str, *, with_errors: bool = True) -> JobProgress:
        with self.db.session() as s:
            rec = self._record(s, job_id)
            if self._dead_reason(rec, utcnow()) is None:
                errors = list(s.scalars(select(JobErrorRecord).where(JobErrorRecord.job_id == job_id)
                                        .order_by(JobErrorRecord.id).limit(200))) if with_errors else []
                position = self._positions(s).get(job_id) if rec.status == QUEUED else None
                return record_to_progress(rec, errors, position)
        self.sweep()  # nobody may be admitting jobs now: a dead job is failed when someone looks at it
        return self.get(job_id, with_errors=with_errors)

    def owner(self, job_id: str) -> str:
        with self.db.session() as s:
            return self._record(s, job_id).created_by

    def list(self, limit: int = 50, created_by: str | None = None) -> list[JobProgress]:
        with self.db.session() as s:
            query = select(JobRecord).order_by(JobRecord.created_at.desc()).limit(limit)
            if created_by:
                query = query.where(JobRecord.created_by == created_by)
            records = list(s.scalars(query))
            now = utcnow()
            if not any(self._dead_reason(r, now) for r in records):
                positions = self._positions(s) if any(r.status == QUEUED for r in records) else {}
                return [record_to_progress(r, queue_position=positions.get(r.job_id)) for r in records]
        self.sweep()
        return self.list(limit, created_by)

    def sweep(self) -> None:
        """Fail the jobs whose holder is gone or that are far past their deadline (what every admission does)."""
        self.admit([])

    def status(self, job_id: str) -> str:
        with self.db.session() as s:
            return self._record(s, job_id).status

    def state(self, job_id: str) -> tuple[str, str, datetime | None]:
        """(status, message, deadline) of a job."""
        with self.db.session() as s:
            rec = self._record(s, job_id)
            return rec.status, rec.message, _aware(rec.deadline_at) if rec.deadline_at else None

    def set_status(self, job_id: str, status: str, *, allowed_from: tuple[str, ...] | None = None,
                   message: str | None = None, finished: bool = False) -> None:
        with self.db.session() as s:
            rec = self._record(s, job_id)
            if allowed_from is not None and rec.status not in allowed_from:
                raise Conflict(f"job {job_id} is {rec.status}; cannot change it to {status}", field="status")
            rec.status = status
            if message is not None:
                rec.message = message
            now = utcnow()
            if status == "running" and rec.started_at is None:
                rec.started_at = now
            if finished:
                rec.finished_at = now

    def stop(self, job_id: str, message: str, *, finished: bool = False) -> bool:
        """Mark an open job failed with ``message`` (a time limit, a driver that cannot start); False if it had
        already ended (``finished``: also record that its driver has stopped)."""
        with self.db.session() as s:
            rec = self._record(s, job_id)
            if rec.status not in OPEN:
                if finished and rec.finished_at is None:
                    rec.finished_at = utcnow()
                return False
            if finished or rec.status == QUEUED:  # a queued job has no driver that could finish it later
                rec.finished_at = utcnow()
            rec.status, rec.message = "failed", message
        notify_slot_freed()
        return True

    def mark_started(self, job_id: str) -> None:
        """The driver starts its work: ``running``, unless the job was paused before it started (it stays paused:
        its stages wait for the resume)."""
        with self.db.session() as s:
            rec = self._record(s, job_id)
            if rec.status not in ("pending", "running", "paused"):
                raise Conflict(f"job {job_id} is {rec.status}; cannot start it", field="status")
            if rec.status == "pending":
                rec.status = "running"
            rec.started_at = rec.started_at or utcnow()

    def heartbeat(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        with self.db.session() as s:
            s.execute(update(JobRecord).where(JobRecord.job_id.in_(list(job_ids)), JobRecord.status.in_(OPEN))
                      .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False))

    # ---- control requests from the API / CLI
    def pause(self, job_id: str) -> None:
        self.set_status(job_id, "paused", allowed_from=("pending", "running"))

    def resume(self, job_id: str) -> None:
        self.set_status(job_id, "running", allowed_from=("paused",))

    def cancel(self, job_id: str) -> None:
        """A queued job leaves the queue at once (it never ran: finished now); a running one stops at its next
        checkpoint, or is interrupted after ``stop_grace_s``."""
        with self.db.session() as s:
            rec = self._record(s, job_id)
            if rec.status not in OPEN:
                raise Conflict(f"job {job_id} is {rec.status}; cannot change it to cancelled", field="status")
            if rec.status == QUEUED:
                rec.message, rec.finished_at = "cancelled while queued", utcnow()
            rec.status = "cancelled"
        notify_slot_freed()

    # ---- admission
    def admit(self, job_ids: Sequence[str]) -> Admission:
        """Admit those of ``job_ids`` (queued) that the caps and the queue order allow now, and refresh the
        heartbeat of the rest. One transaction that first updates the lock row, so admissions never interleave
        (SQLite: the write lock; PostgreSQL/MySQL: the row lock), and first fails dead and overdue jobs."""
        mine = list(dict.fromkeys(job_ids))
        result = Admission()
        now = utcnow()
        with self.db.session() as s:
            locked = s.execute(update(JobAdmission).where(JobAdmission.id == 1)
                               .values(admissions=JobAdmission.admissions + 1))
            if getattr(locked, "rowcount", 1) == 0:  # a schema created without the migration's row
                s.add(JobAdmission(id=1, admissions=1))
                s.flush()
            open_jobs = list(s.scalars(select(JobRecord).where(JobRecord.status.in_(OPEN))
                                       .order_by(JobRecord.created_at, JobRecord.job_id)))
            live = [r for r in open_jobs if not self._sweep(r, now)]
            active = [r for r in live if r.status in ACTIVE]
            total, per_user = len(active), Counter(r.created_by for r in active)
            wanted = set(mine)
            for rec in (r for r in live if r.status == QUEUED):
                if total >= self.limits.max_concurrent:
                    break
                if per_user[rec.created_by] >= self.limits.max_per_user:
                    continue  # its owner is at the cap: later jobs of other users may pass it
                total += 1  # the first eligible job takes the slot, whoever's queue holds it
                per_user[rec.created_by] += 1
                if rec.job_id in wanted:
                    rec.status, rec.heartbeat_at = "pending", now
                    rec.deadline_at = now + timedelta(seconds=self.limits.timeout_s) if self.limits.timeout_s else None
                    result.admitted.append(rec.job_id)
            still_queued = {r.job_id for r in live if r.status == QUEUED}
            for rec in live:
                if rec.job_id in wanted and rec.job_id in still_queued:
                    rec.heartbeat_at = now
            result.gone = [j for j in mine if j not in still_queued and j not in result.admitted]
        return result

    def occupancy(self) -> tuple[int, int]:
        """(admitted, queued) job counts: one cheap read, polled by waiting jobs; admission runs when it changes."""
        with self.db.session() as s:
            rows = s.execute(select(JobRecord.status, func.count()).where(JobRecord.status.in_(OPEN))
                             .group_by(JobRecord.status)).all()
        counts = {status: int(n) for status, n in rows}
        return sum(counts.get(status, 0) for status in ACTIVE), counts.get(QUEUED, 0)

    def queue_position(self, job_id: str) -> int | None:
        with self.db.session() as s:
            return self._positions(s).get(job_id)

    def _sweep(self, rec: JobRecord, now: datetime) -> bool:
        """Fail ``rec`` if its holder is gone or it is far past its deadline; True when it was failed."""
        reason = self._dead_reason(rec, now)
        if reason is None:
            return False
        rec.status, rec.message, rec.finished_at = "failed", reason, now
        return True

    def _dead_reason(self, rec: JobRecord, now: datetime) -> str | None:
        if rec.status not in OPEN:
            return None
        seen = rec.heartbeat_at or rec.updated_at or rec.created_at
        if seen is not None and now - _aware(seen) > timedelta(seconds=self.limits.lease_s):
            return ("abandoned: the process holding the queued job stopped" if rec.status == QUEUED else
                    f"the job driver stopped: no heartbeat for {self.limits.lease_s:g} s")
        if rec.status in ACTIVE and rec.deadline_at is not None and now > _aware(rec.deadline_at) + timedelta(
                seconds=4 * self.limits.stop_grace_s + self.limits.heartbeat_s):
            return "timed out: the job ran past its deadline and its driver did not stop"
        return None

    @staticmethod
    def _positions(session: Any) -> dict[str, int]:
        ids = session.scalars(select(JobRecord.job_id).where(JobRecord.status == QUEUED)
                              .order_by(JobRecord.created_at, JobRecord.job_id))
        return {job_id: index for index, job_id in enumerate(ids, start=1)}

    @staticmethod
    def _record(session: Any, job_id: str) -> JobRecord:
        rec = session.get(JobRecord, job_id)
        if rec is None:
            raise NotFound(f"job {job_id!r} not found", field="job_id")
        return rec


class JobTracker:
    """Used by a job driver: counts progress, records errors, honours pause/cancel/stop between batches."""

    def __init__(self, jobs: JobStore, job_id: str, listeners: list[ProgressListener] | None = None,
                 flush_every_s: float = 0.5):
        self.jobs = jobs
        self.job_id = job_id
        self.listeners = list(listeners or [])
        self.flush_every_s = flush_every_s
        self._started = time.monotonic()
        self._last_flush = 0.0
        self._lock = threading.Lock()
        self._trailing: threading.Timer | None = None  # a skipped flush, done later: counters never stay stale
        self._finished = False
        rec = jobs.get(job_id, with_errors=False)
        self.progress = JobProgress(job_id=job_id, kind=rec.kind, status="running")

    def start(self, items_total: int, skipped: int = 0, deleted: int = 0) -> None:
        self.jobs.mark_started(self.job_id)
        self.progress.items_total = items_total
        self.progress.items_skipped = skipped
        self.progress.items_deleted = deleted
        self.flush(force=True)

    def add(self, *, items: int = 0, chunks: int = 0) -> None:
        with self._lock:
            self.progress.items_done += items
            self.progress.chunks_done += chunks
        self.flush()

    def completed(self, items: Sequence[str], batch_sizes: Iterable[int] = ()) -> None:
        """Items finished, in order, and the embedding batch sizes their chunks were encoded at (0: unknown)."""
        with self._lock:
            progress = self.progress
            progress.first_items.extend(items[:max(0, ITEMS_KEPT - len(progress.first_items))])
            for size in batch_sizes:
                if size and (not progress.embed_batch_sizes or progress.embed_batch_sizes[-1] != size):
                    progress.embed_batch_sizes = [*progress.embed_batch_sizes[-(ITEMS_KEPT - 1):], int(size)]

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
        """Write the counters (at most every ``flush_every_s``; a skipped update is written that much later, so a
        job whose workers stopped — paused — shows what they did)."""
        now = time.monotonic()
        if not force and now - self._last_flush < self.flush_every_s:
            self._flush_later(self.flush_every_s - (now - self._last_flush))
            return
        self._last_flush = now
        self.progress.elapsed_s = now - self._started
        with self.jobs.db.session() as s:
            rec = s.get(JobRecord, self.job_id)
            if rec is not None:
                for name in ("items_total", "items_done", "items_skipped", "items_deleted", "chunks_done",
                             "errors_count"):
                    setattr(rec, name, getattr(self.progress, name))
                if self.progress.embed_batch_sizes or self.progress.first_items:
                    rec.params = {**(rec.params or {}), EXECUTION_KEY: {
                        "embed_batch_sizes": list(self.progress.embed_batch_sizes),
                        "first_items": list(self.progress.first_items)}}
        for listener in self.listeners:
            listener(self.progress)

    def _flush_later(self, delay_s: float) -> None:
        with self._lock:
            if self._trailing is not None or self._finished:
                return
            self._trailing = threading.Timer(delay_s, self._trailing_flush)
            self._trailing.daemon = True
            self._trailing.start()

    def _trailing_flush(self) -> None:
        with self._lock:
            self._trailing = None
            if self._finished:
                return
        try:
            self.flush(force=True)
        except Exception as exc:  # the DB is briefly unavailable: the next update flushes again
            log.warning("job %s: progress flush failed: %s", self.job_id, type(exc).__name__)

    def control(self) -> JobControl:
        """What the job's stages check before each file and batch (``rag_ray.ingest.controls``)."""
        from rag_ray.ingest.controls import JobControl, share_database

        share_database(self.jobs.db)
        return JobControl(self.jobs.db.url, self.job_id, self.jobs.limits.poll_s)

    def raise_if_ended(self) -> None:
        """Raise JobCancelled/JobStopped if the job was ended from outside (never blocks: a pause is the stages')."""
        status, message, _ = self.jobs.state(self.job_id)
        if status == "cancelled":
            raise JobCancelled(f"job {self.job_id} was cancelled")
        if status == "failed":
            raise JobStopped(message or f"job {self.job_id} was stopped")

    def checkpoint(self, poll_s: float = 0.2) -> None:
        """Between batches: raise JobCancelled/JobStopped if the job was ended; block while paused (back-pressure)."""
        while True:
            status, message, _ = self.jobs.state(self.job_id)
            if status == "cancelled":
                raise JobCancelled(f"job {self.job_id} was cancelled")
            if status == "failed":
                raise JobStopped(message or f"job {self.job_id} was stopped")
            if status != "paused":
                return
            self.progress.status = "paused"
            self.flush(force=True)
            time.sleep(poll_s)  # polling the DB is the only signal a paused job gets

    def finish(self, status: str, message: str = "") -> None:
        """Record the driver's outcome; a job already ended from outside (cancel, time limit) keeps that ending."""
        with self._lock:
            self._finished = True
            if self._trailing is not None:
                self._trailing.cancel()
        self.progress.status = status
        self.progress.message = message
        self.flush(force=True)
        current, current_message, _ = self.jobs.state(self.job_id)
        if current in STOPPED:
            self.progress.status, self.progress.message = current, current_message
            self.jobs.set_status(self.job_id, current, finished=True)
        else:
            self.jobs.set_status(self.job_id, status, message=message, finished=True)
        notify_slot_freed()


class JobSummary(Protocol):
    status: str
    duration_s: float
    errors: list[dict[str, str]]


def run_tracked(tracker: JobTracker, summary: JobSummary, work: Callable[[], None], message: Callable[[], str],
                describe_error: Callable[[Exception], str] = str) -> None:
    """Run a job body under supervision (admission, heartbeat, time limit) and record how it ended, on the job
    record and on ``summary``.

    Cancellation and a stop from outside (time limit) end the job quietly; any other error marks it failed and
    propagates."""
    from rag_ray.ingest.supervise import supervise

    started = time.monotonic()
    try:
        with supervise(tracker.jobs, tracker.job_id):
            work()
        summary.status = "succeeded"
        tracker.finish("succeeded", message())
    except JobCancelled:
        summary.status = "cancelled"
        tracker.finish("cancelled", "cancelled by request")
    except JobStopped as exc:
        summary.status = "failed"
        tracker.finish("failed", exc.message)
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
        summary.status = tracker.progress.status if tracker.progress.status in STOPPED else summary.status
