"""Supervision of one running job: wait for admission, keep its heartbeat, enforce its deadline, stop it for sure.

A job is stopped from outside by its record: ``cancel`` (the API), or this supervisor when the deadline passes
(``failed``, with the reason). The driver's next checkpoint ends it cooperatively. A driver blocked in a long
call (a Ray Data pipeline waiting for resources, a hung connection) is interrupted after ``stop_grace_s`` with
``JobInterrupted`` raised in its thread; a Ray task driver that still does not stop exits its worker process
after another grace period, which also ends the Ray Data actors it owns. ``check_reachable`` makes a source or
store that cannot be reached fail the job in seconds, with the reason, instead of hanging it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from rag_ray.errors import RagError, SourceError
from rag_ray.ingest.tracking import (
    ACTIVE,
    QUEUED,
    STOPPED,
    JobCancelled,
    JobLimits,
    JobStopped,
    JobStore,
    notify_slot_freed,
    utcnow,
    wait_for_slot,
)

log = logging.getLogger(__name__)

_supervised: dict[str, Supervisor] = {}  # job id → its supervisor in this process
_supervised_lock = threading.Lock()


class JobInterrupted(BaseException):
    """Raised in a job's thread when it was stopped but did not reach a checkpoint in time. A BaseException, so
    per-item ``except Exception`` handlers (a broken file must not end a job) do not swallow it."""


class Supervisor:
    def __init__(self, jobs: JobStore, job_id: str, limits: JobLimits):
        self.jobs, self.job_id, self.limits = jobs, job_id, limits
        self.thread_id = threading.get_ident()
        self.reason = ""
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._working = False
        self._interrupted = False
        self._watcher: threading.Thread | None = None

    def wait_admitted(self) -> None:
        """Block while the job is queued (heartbeating it); raise if it ends before it is admitted. Admission (a
        write) is tried when the DB's job counts change and every ``heartbeat_s``; the counts are read every
        ``poll_s``."""
        seen, tried = None, 0.0
        while True:
            status, message, _ = self.jobs.state(self.job_id)
            if status in ACTIVE:
                return
            if status == QUEUED:
                now = self.jobs.occupancy()
                if now != seen or time.monotonic() - tried >= self.limits.heartbeat_s:
                    if self.jobs.admit([self.job_id]).admitted:
                        return
                    seen, tried = self.jobs.occupancy(), time.monotonic()
                wait_for_slot(self.limits.poll_s)
                continue
            if status == "cancelled":
                raise JobCancelled(f"job {self.job_id} was cancelled")
            raise JobStopped(message or f"job {self.job_id} is {status}")

    def start(self) -> None:
        self._working = True
        self._watcher = threading.Thread(target=self._watch, daemon=True, name=f"job-watch-{self.job_id[:8]}")
        self._watcher.start()

    def close(self) -> None:
        with self._lock:
            self._working = False
            if self._interrupted:  # raised but maybe not delivered yet: it must not hit the code after the job
                _set_async_exc(self.thread_id, None)
        self._done.set()

    # ---- the watcher thread
    def _watch(self) -> None:
        stopped_at: float | None = None
        status, deadline = "pending", None
        while True:
            wait = self.limits.heartbeat_s
            if deadline is not None and stopped_at is None and status in ACTIVE:
                wait = min(wait, max(0.5, (deadline - utcnow()).total_seconds()))
            if stopped_at is not None:
                wait = min(wait, self.limits.stop_grace_s)
            if self._done.wait(wait):
                return
            try:
                self.jobs.heartbeat([self.job_id])
                status, message, deadline = self.jobs.state(self.job_id)
                if status in ACTIVE and deadline is not None and utcnow() >= deadline:
                    message = self.limits.timeout_message()
                    if self.jobs.stop(self.job_id, message):
                        status = "failed"
                        log.warning("job %s: %s", self.job_id, message)
            except Exception as exc:  # the DB is briefly unavailable: try again at the next tick
                log.warning("job %s: supervision check failed: %s", self.job_id, type(exc).__name__)
                continue
            if status not in STOPPED:  # running, or ended normally and its driver is finishing
                continue
            if stopped_at is None:
                stopped_at, self.reason = time.monotonic(), message or f"job {status}"
                continue
            waited = time.monotonic() - stopped_at
            if waited >= self.limits.stop_grace_s and not self._interrupted:
                self._interrupt()
            elif waited >= 2 * self.limits.stop_grace_s and self._interrupted:
                self._exit_worker()

    def _interrupt(self) -> None:
        with self._lock:
            if self._working:
                log.warning("job %s did not stop at a checkpoint; interrupting it", self.job_id)
                _set_async_exc(self.thread_id, JobInterrupted)
                self._interrupted = True

    def _exit_worker(self) -> None:
        """Last resort for a driver blocked where an exception cannot reach it: only a Ray task's worker process
        (its Ray Data actors die with it); a thread in a server or CLI process is left to finish its call."""
        if not self._working or not in_ray_task():
            return
        log.error("job %s is stuck after being stopped (%s); exiting its Ray worker", self.job_id, self.reason)
        try:
            self.jobs.stop(self.job_id, self.reason, finished=True)
        finally:
            os._exit(1)


@contextmanager
def supervise(jobs: JobStore, job_id: str, limits: JobLimits | None = None) -> Iterator[Supervisor]:
    """Run the body as job ``job_id``: wait for admission, then heartbeat and enforce the deadline until it ends.

    Re-entrant in one thread (a launched driver's wrapper and the job body both supervise). ``JobInterrupted``
    leaves as ``JobStopped`` with the reason."""
    with _supervised_lock:
        current = _supervised.get(job_id)
    if current is not None and current.thread_id == threading.get_ident():
        try:
            yield current
        except JobInterrupted:
            raise JobStopped(current.reason or f"job {job_id} was stopped") from None
        return
    sup = Supervisor(jobs, job_id, limits or jobs.limits)
    sup.wait_admitted()
    with _supervised_lock:
        _supervised[job_id] = sup
    sup.start()
    try:
        yield sup
    except JobInterrupted:
        raise JobStopped(sup.reason or f"job {job_id} was stopped") from None
    finally:
        sup.close()
        with _supervised_lock:
            _supervised.pop(job_id, None)
        notify_slot_freed()


@contextmanager
def job_lifecycle(jobs: JobStore, job_id: str | None) -> Iterator[None]:
    """``supervise`` a launched driver from its first line, and record a failure that escapes before (or around)
    the job body — connecting to the store, starting Ray — so the job never stays open without a driver.
    ``job_id`` None (a CLI run that records its job later): nothing to supervise yet."""
    if job_id is None:
        yield
        return
    try:
        with supervise(jobs, job_id):
            yield
    except BaseException as exc:
        reason = exc.message if isinstance(exc, RagError) else f"{type(exc).__name__}: {str(exc)[:500]}"
        try:
            jobs.stop(job_id, reason, finished=True)
        except Exception as record_exc:  # the metadata DB itself is down: nothing more can be recorded
            log.warning("job %s: could not record its failure: %s", job_id, type(record_exc).__name__)
        raise


def check_reachable(address: str, timeout_s: float, what: str, default_port: int | None = None) -> None:
    """Fail fast, with the reason, when nothing accepts a TCP connection at ``address`` within ``timeout_s``.

    ``address``: a URL (``http://host:port``, ``postgresql://…``) or ``host:port``; local paths are not checked."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    host = parts.hostname
    try:
        port = parts.port or default_port
    except ValueError:
        port = None
    if not host or not port:
        return
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        waited = time.monotonic() - started
        cause = "timed out" if isinstance(exc, TimeoutError) or waited >= timeout_s else (exc.strerror or str(exc))
        raise SourceError(f"cannot reach {what} at {host}:{port}: {cause} (connect timeout {timeout_s:g} s, "
                          f"RAG_JOBS_CONNECT_TIMEOUT_S)") from None


def in_ray_task() -> bool:
    """True inside a Ray task's worker process (not the driver, not an actor such as a Serve replica)."""
    import sys

    if "ray" not in sys.modules:
        return False
    import ray

    if not ray.is_initialized():
        return False
    context = ray.get_runtime_context()
    return bool(context.worker.mode == ray._private.worker.WORKER_MODE and context.get_actor_id() is None)


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in the thread at its next bytecode (None: withdraw a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)
