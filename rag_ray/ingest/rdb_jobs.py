"""Database sync jobs started from the API: record the job, launch it in the background through the platform."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rag_ray.config import Settings
from rag_ray.ingest.admission import JobQueue, run_admitted
from rag_ray.ingest.file_jobs import Launcher
from rag_ray.ingest.rdb_sync import RdbSyncRequest
from rag_ray.ingest.tracking import JobLimits, JobStore
from rag_ray.metadata import MetadataDB
from rag_ray.types import Principal

RdbJobRunner = Callable[[Settings, RdbSyncRequest, str], Any]


class RdbJobService:
    def __init__(self, settings: Settings, db: MetadataDB, runner: RdbJobRunner, launcher: Launcher):
        self.settings = settings
        self.jobs = JobStore(db, JobLimits.from_settings(settings))
        self.queue = JobQueue(self.jobs)
        self.runner = runner
        self.launcher = launcher

    def submit(self, request: RdbSyncRequest, principal: Principal) -> str:
        """The request is already checked (allow-listed host, valid options); the job record has no password.
        The job is queued and launched once admitted (``RAG_JOBS_MAX_CONCURRENT``, ``RAG_JOBS_MAX_PER_USER``)."""
        job_id = self.jobs.create("rdb", request.describe(), created_by=principal.user_id)
        self.queue.submit(job_id, lambda: self.launcher(run_admitted, self.settings, job_id, self.runner,
                                                        self.settings, request, job_id))
        return job_id
