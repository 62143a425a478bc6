"""Helpers for job admission and time-limit tests: a gated embedder, condition waits, job records."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.metadata import JobRecord, MetadataDB


class GateEmbedder(FakeEmbedder):
    """Every embed call waits until the gate opens, in a Python loop (a stopped job's interrupt can reach it)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.calls = 0

    def embed(self, texts, *, input_type="document") -> np.ndarray:  # type: ignore[no-untyped-def,override]
        self.calls += 1
        while not self.gate.wait(0.05):
            pass
        return super().embed(texts, input_type=input_type)


def wait_until(predicate: Callable[[], Any], timeout_s: float = 120, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (the jobs' records are the only signal)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def records(db: MetadataDB, job_ids: list[str]) -> list[JobRecord]:
    with db.session() as s:
        return [s.get(JobRecord, j) for j in job_ids]  # type: ignore[misc]


def aware(value: datetime | None) -> datetime:
    assert value is not None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
