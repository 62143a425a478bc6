"""Start queued jobs in order as slots free, without a waiting process per queued job.

A service that submits jobs (file uploads, directory and database extracts) records each job as ``queued`` and
hands ``JobQueue`` a launch callable. The queue admits jobs through the metadata DB (``JobStore.admit``: the
caps and the first-come order hold across processes) and launches each one only once it is admitted, so a burst
of submissions becomes a list in memory and rows in the DB, not dozens of idle Ray workers. While a job waits,
the queue keeps its heartbeat; if this process stops, the next admission anywhere fails the job as abandoned.

``run_admitted`` is the body a launcher runs: it supervises the whole driver (set-up included) and records a
failure that happens before the job body could, so no job stays open without a driver.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rag_ray.ingest.supervise import job_lifecycle
from rag_ray.ingest.tracking import JobCancelled, JobLimits, JobStopped, JobStore, wait_for_slot

log = logging.getLogger(__name__)

Launch = Callable[[], None]


class JobQueue:
    def __init__(self, jobs: JobStore):
        self.jobs = jobs
        self._waiting: dict[str, Launch] = {}  # job id → launch, in submission order
        self._lock = threading.Lock()
        self._pump_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, job_id: str, launch: Launch) -> None:
        """Launch ``job_id`` now if it is admitted, else when its turn comes (the job record says which)."""
        with self._lock:
            self._waiting[job_id] = launch
        self.pump()
        with self._lock:
            if self._waiting and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, daemon=True, name="job-queue")
                self._thread.start()

    @property
    def waiting(self) -> list[str]:
        with self._lock:
            return list(self._waiting)

    def pump(self) -> None:
        """One admission round for the jobs this queue holds; launches the admitted ones."""
        with self._pump_lock:
            ids = self.waiting
            if not ids:
                return
            try:
                result = self.jobs.admit(ids)
            except Exception as exc:  # DB busy or briefly down: the next round retries
                log.warning("job admission failed: %s", type(exc).__name__)
                return
            with self._lock:
                launches = [(j, self._waiting.pop(j)) for j in result.admitted]
                for job_id in result.gone:
                    self._waiting.pop(job_id, None)
            for job_id, launch in launches:
                try:
                    launch()
                except Exception as exc:
                    self.jobs.stop(job_id, f"could not start the job: {type(exc).__name__}: {str(exc)[:300]}",
                                   finished=True)

    def _run(self) -> None:
        """Admission (a write) runs when a job of this process ends, when the DB's job counts change (another
        process's job ended or was cancelled: one read every ``poll_s``) and every ``heartbeat_s`` (heartbeats)."""
        seen, pumped = None, time.monotonic()
        while True:
            with self._lock:
                if not self._waiting:
                    self._thread = None
                    return
            woken = wait_for_slot(self.jobs.limits.poll_s)
            try:
                now = self.jobs.occupancy()
            except Exception:  # the DB is briefly unavailable: the next round retries
                continue
            if woken or now != seen or time.monotonic() - pumped >= self.jobs.limits.heartbeat_s:
                self.pump()
                seen, pumped = self.jobs.occupancy(), time.monotonic()


def run_admitted(settings: Any, job_id: str, fn: Callable[..., Any], *args: Any) -> Any:
    """The launched body of job ``job_id``: ``fn(*args)`` supervised from its first line (a Ray task or a thread).

    ``settings``: the server's ``Settings`` (the metadata DB and ``RAG_JOBS_*``). A job that was cancelled or
    stopped ends quietly: its record already says how and why."""
    from rag_ray.metadata import MetadataDB
    from rag_ray.observability.context import log_context

    db = MetadataDB.from_settings(settings)
    try:
        jobs = JobStore(db, JobLimits.from_settings(settings))
        # every log line of the job carries its id and the id of the request that created it
        with log_context(job_id=job_id, request_id=jobs.request_id(job_id)), job_lifecycle(jobs, job_id):
            return fn(*args)
    except (JobCancelled, JobStopped):
        return None
    finally:
        db.dispose()
