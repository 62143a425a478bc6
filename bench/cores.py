"""Where a benchmark's cores went: CPU seconds of every process of the machine during a run, grouped by role.

Processes are sampled every ``interval_s`` while the run lasts, so one that exits before the end (a Ray Data actor
released when its input is done) still counts, up to its last sample. A process that starts meanwhile counts from
zero. A process's role is the last specific one its title showed: Ray renames a worker after the task it runs
(``ray::IDLE`` between tasks), and ``classify`` answers ``other`` for titles it has no role for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

import psutil

OTHER = "other"
T = TypeVar("T")


def cpu_by_pid() -> dict[int, tuple[str, float]]:
    """(title, CPU seconds so far) of each process this user may read."""
    used: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
        times, cmdline = proc.info["cpu_times"], proc.info["cmdline"]
        if times is not None:  # None: gone, or not ours to read
            used[proc.info["pid"]] = (" ".join(cmdline or ()), times.user + times.system)
    return used


class CpuMeter:
    """``with CpuMeter(classify) as meter: run()`` → ``meter.cores()``: the cores each role kept busy (CPU seconds ÷
    wall seconds of the block). ``classify(title, pid)`` names a process's role."""

    def __init__(self, classify: Callable[[str, int], str], interval_s: float = 0.5):
        self.classify, self.interval_s = classify, interval_s
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.roles: dict[int, str] = {}
        self.wall = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuMeter:
        self.start = {pid: seconds for pid, (_, seconds) in cpu_by_pid().items()}
        self._began = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        self.wall = time.perf_counter() - self._began

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        for pid, (title, seconds) in cpu_by_pid().items():
            self.last[pid] = seconds
            role = self.classify(title, pid)
            if role != OTHER or pid not in self.roles:
                self.roles[pid] = role

    def cores(self) -> dict[str, float]:
        busy: dict[str, float] = {}
        for pid, seconds in self.last.items():
            role = self.roles[pid]
            busy[role] = busy.get(role, 0.0) + seconds - self.start.get(pid, 0.0)
        return {role: round(seconds / self.wall, 2) for role, seconds in sorted(busy.items())}


def metered(classify: Callable[[str, int], str], run: Callable[[], T]) -> tuple[T, dict[str, float]]:
    """``run()``'s result, and the cores each role (``classify``) kept busy meanwhile."""
    with CpuMeter(classify) as meter:
        result = run()
    return result, meter.cores()
