"""The in-process executor overlaps writing one batch with embedding the next, and stays correct doing it: results
in order on the caller's thread, a write in flight when the job stops still reported, write errors raised, no thread
left behind. Stages are recording fakes; every wait is on an event, with a timeout only as a failure bound."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from rag_ray.ingest.executor import LocalExecutor

BOUND_S = 30.0  # a broken overlap fails the test after this long instead of hanging it


class Stopped(Exception):
    pass


@dataclass
class Stages:
    """parse: one row per task; embed: records which batch it started; write: for batch ``n``, waits until the
    embedding of batch ``n + 1`` has started (it can only have if the write runs beside it)."""

    batches: int
    fail_write_at: int | None = None
    embedding: list[threading.Event] = field(default_factory=list)
    writer_threads: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.embedding = [threading.Event() for _ in range(self.batches)]

    def parse(self) -> Any:
        return lambda task: [{"id": task["n"], "text": f"row {task['n']}"}]

    def enrich(self, level: str | None = None) -> Any:
        return lambda batch: batch

    def embed(self) -> Any:
        def embed(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            self.embedding[batch["id"][0]].set()
            return batch
        return embed

    def write(self) -> Any:
        def write(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            n = batch["id"][0]
            self.writer_threads.add(threading.current_thread().name)
            if n == self.fail_write_at:
                raise RuntimeError(f"milvus refused batch {n}")
            if n + 1 < self.batches:
                assert self.embedding[n + 1].wait(BOUND_S), f"batch {n + 1} was not embedded while {n} was written"
            return {"written": [n]}
        return write


def tasks(n: int) -> list[dict[str, Any]]:
    return [{"n": i} for i in range(n)]


def test_each_write_overlaps_the_next_embedding_and_results_arrive_in_order() -> None:
    stages, reported = Stages(5), []
    caller = threading.current_thread().name

    def on_results(results: dict[str, list[Any]]) -> None:
        assert threading.current_thread().name == caller
        reported.extend(results["written"])

    LocalExecutor(batch_size=1).run(tasks(5), stages, on_results, checkpoint=lambda: None)
    assert reported == [0, 1, 2, 3, 4]
    assert stages.writer_threads and caller not in stages.writer_threads
    assert not [t for t in threading.enumerate() if t.name.startswith("ingest-write")]


def test_a_stopped_job_still_reports_the_write_it_had_in_flight() -> None:
    stages, reported, checks = Stages(6), [], []

    def checkpoint() -> None:  # cancelled before the fourth batch
        checks.append(1)
        if len(checks) == 4:
            stages.embedding[3].set()  # what batch 2's write waits for, as a job that stops never embeds it
            raise Stopped

    with pytest.raises(Stopped):
        LocalExecutor(batch_size=1).run(tasks(6), stages, lambda r: reported.extend(r["written"]), checkpoint)
    assert reported == [0, 1, 2]  # batch 2 was being written when the job stopped: stored, so reported
    assert not [t for t in threading.enumerate() if t.name.startswith("ingest-write")]


def test_a_failed_write_fails_the_job_after_the_earlier_results() -> None:
    stages, reported = Stages(4, fail_write_at=2), []
    with pytest.raises(RuntimeError, match="refused batch 2"):
        LocalExecutor(batch_size=1).run(tasks(4), stages, lambda r: reported.extend(r["written"]), lambda: None)
    assert reported == [0, 1]
