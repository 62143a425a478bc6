"""A rich progress bar fed by a job's progress counters."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rag_ray.ingest.tracking import JobProgress


class JobProgressBar:
    def __init__(self, console: Console, description: str = "ingest"):
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("files · {task.fields[chunks]} chunks · {task.fields[rate]:.1f} chunks/s"
                                            " · {task.fields[errors]} errors"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                                 transient=False)
        self.description = description
        self.task: TaskID | None = None

    def __enter__(self) -> JobProgressBar:
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=None, chunks=0, rate=0.0, errors=0)
        return self

    def __call__(self, p: JobProgress) -> None:
        if self.task is None:
            return
        self.progress.update(self.task, total=max(p.items_total, 1), completed=p.items_done + p.items_skipped,
                             chunks=p.chunks_done, rate=p.rate_chunks_per_s, errors=p.errors_count)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.stop()
