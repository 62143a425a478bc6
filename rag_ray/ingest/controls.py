"""Pause, resume and cancel reach the workers, not only the job record.

Every stage of an ingest pipeline checks its job's state before it starts new work: the parse stage before each file
(or database partition), the embedding and write stages before each batch. The same stages run in the driver
(``LocalExecutor``) and in Ray Data tasks and actors, so both paths obey the same bound:

- **pause**: the work in hand finishes (per parse task the file being parsed, per embedding actor the batch being
  embedded, the writer's batch being written) and nothing new starts; a paused worker re-reads the state every
  ``JobLimits.poll_s`` (0.2 s) — it holds its slot and its actor, and continues where it stopped on resume.
- **cancel** (or a stop: time limit): every stage skips its work from its next check on, so the pipeline drains in
  moments and no write starts after the one in hand. The driver then keeps every document whole
  (``FileIngestor``/``RdbIngestor`` settle: fully written ones are recorded, partly written ones removed).

``JobControl`` travels to Ray workers by pickle (the metadata DB URL and the job id); each process opens the
metadata DB once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from rag_ray.ingest.executor import SharedModel, StageFactories
from rag_ray.ingest.rows import KIND_EMPTY
from rag_ray.ingest.stages import EmbedChunks, EnrichChunks, ParseAndChunk, WriteChunks
from rag_ray.metadata import JobRecord, MetadataDB

log = logging.getLogger(__name__)
RUNNABLE = ("pending", "running")
PAUSED = "paused"

_databases: dict[str, MetadataDB] = {}  # metadata DB URL → this process's connection to it
_databases_lock = threading.Lock()


def share_database(db: MetadataDB) -> None:
    """Let controls in this process use ``db`` (the driver's own engine; needed for in-memory SQLite too)."""
    with _databases_lock:
        _databases[db.url] = db


def _database(url: str) -> MetadataDB:
    with _databases_lock:
        db = _databases.get(url)
        if db is None:
            db = _databases[url] = MetadataDB(url, migrate=False)
        return db


@dataclass(frozen=True)
class JobControl:
    """What a worker reads to obey its job's controls (picklable)."""

    metadata_url: str = field(repr=False)  # may carry a password
    job_id: str
    poll_s: float = 0.2

    def proceed(self) -> bool:
        """Block while the job is paused; True: go on, False: the job has ended (cancelled, stopped), skip the work."""
        while True:
            status = self.status()
            if status != PAUSED:
                return status in RUNNABLE
            time.sleep(self.poll_s)  # the job record is the only signal a worker on another node gets

    def status(self) -> str:
        try:
            with _database(self.metadata_url).engine.connect() as conn:  # a third of an ORM session's cost
                status = conn.execute(select(JobRecord.status).where(JobRecord.job_id == self.job_id)).scalar()
        except Exception as exc:  # the DB is briefly unavailable: carry on, the next check reads it again
            log.warning("job %s: control check failed: %s", self.job_id, type(exc).__name__)
            return "running"
        return status or "cancelled"  # the record is gone: nobody wants the work any more


class ControlledParse(ParseAndChunk):
    """Checks the job before each file (database partition); an ended job's files yield no rows."""

    def __init__(self, inner: ParseAndChunk, control: JobControl):  # no super().__init__: ``inner`` parses
        self.inner, self.control = inner, control

    def __call__(self, task: dict[str, Any]) -> list[dict[str, Any]]:
        if not self.control.proceed():
            return []
        return self.inner(task)


class ControlledEmbed(EmbedChunks):
    """Checks the job before each batch; an ended job's batches are not embedded (their rows pass on as empty
    markers, in the same columns and types, and its write stage drops them)."""

    def __init__(self, inner: EmbedChunks, control: JobControl):  # no super().__init__: ``inner`` embeds
        self.inner, self.control = inner, control
        self.embedder = inner.embedder

    def adapt(self, *args: Any, **kwargs: Any) -> EmbedChunks:
        self.inner.adapt(*args, **kwargs)
        return self

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.control.proceed():
            return self.inner(batch)
        kinds = batch["kind"]
        no_chunks = np.full(len(kinds), KIND_EMPTY, dtype=object) if isinstance(kinds, np.ndarray) else \
            [KIND_EMPTY] * len(kinds)
        return self.inner({**batch, "kind": no_chunks})  # nothing to embed: zero vectors, no model call


class ControlledWrite(WriteChunks):
    """Checks the job before each batch; an ended job's batches are not written and report nothing."""

    def __init__(self, inner: WriteChunks, control: JobControl):  # no super().__init__: ``inner`` writes
        self.inner, self.control = inner, control
        self.store = inner.store

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        if self.control.proceed():
            return self.inner(batch)
        return self.inner({name: values[:0] for name, values in batch.items()})  # the result columns, no rows


@dataclass(frozen=True)
class ControlledStages:
    """``stages`` whose parse, embed and write steps obey ``control`` (picklable when ``stages`` is)."""

    stages: StageFactories
    control: JobControl

    def parse(self) -> ParseAndChunk:
        return ControlledParse(self.stages.parse(), self.control)

    def enrich(self, level: str | None = None) -> EnrichChunks:
        return self.stages.enrich(level)

    def embed(self) -> EmbedChunks:
        return ControlledEmbed(self.stages.embed(), self.control)

    def write(self) -> WriteChunks:
        return ControlledWrite(self.stages.write(), self.control)

    def shared_model(self) -> SharedModel | None:
        return self.stages.shared_model()


__all__ = ["ControlledEmbed", "ControlledParse", "ControlledStages", "ControlledWrite", "JobControl",
           "share_database"]
