"""`rag-cli serve --reload` (development): run the server as a child process and restart it when a watched ``*.py``
file changes.

A process restart rather than uvicorn's in-process reload, so it works the same on both platforms (on ``ray`` a
change reaches the Serve replicas and Ray Data workers only through a fresh Ray) and the restarted server is exactly
what `rag-cli serve` starts. The watcher polls file modification times (no extra dependency); it starts Milvus Lite
itself, once, so restarts keep the store running and skip its start-up. The child runs in its own session (a terminal
Ctrl-C reaches the watcher, which stops the child in order) and gets SIGTERM if the watcher dies.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console

from rag_ray.cli.serve_cmd import GracefulShutdown
from rag_ray.config import Settings
from rag_ray.store.lite_server import die_with_parent

POLL_S = 0.5
WATCHED_PACKAGES = ("rag_ray", "deployments", "jobs")


def default_watch_dirs() -> list[Path]:
    """The project's packages, where they are imported from (the source tree under `uv run`)."""
    import importlib.util

    dirs: list[Path] = []
    for name in WATCHED_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(Path(p) for p in spec.submodule_search_locations)
    return dirs


def server_argv(argv: list[str]) -> list[str]:
    """This invocation's `rag-cli` arguments without the reload options: what the child server runs with."""
    out: list[str] = []
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg == "--reload-dir":
            skip_value = True
        elif arg != "--reload" and not arg.startswith("--reload-dir="):
            out.append(arg)
    return out


def snapshot(dirs: Iterable[Path]) -> dict[Path, int]:
    found: dict[Path, int] = {}
    for root in dirs:
        for path in root.rglob("*.py"):
            try:
                found[path] = path.stat().st_mtime_ns
            except FileNotFoundError:  # deleted while we walked
                continue
    return found


def changed_files(before: dict[Path, int], after: dict[Path, int]) -> list[Path]:
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


class ServerProcess:
    """The child server: `python -m rag_ray.cli.main <argv>`."""

    def __init__(self, argv: list[str], grace_s: float, console: Console):
        self.argv = argv
        self.grace_s = grace_s
        self.console = console
        self.proc: subprocess.Popen[bytes] | None = None
        self.reported_exit = False

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "rag_ray.cli.main", *self.argv], start_new_session=True,
                                     preexec_fn=die_with_parent(signal.SIGTERM))
        self.reported_exit = False
        self.console.print(f"reload: server started (pid {self.proc.pid})")

    def exited(self) -> int | None:
        """The exit code, once, when the server ended on its own (a crash, a port in use)."""
        if self.proc is None or self.reported_exit or self.proc.poll() is None:
            return None
        self.reported_exit = True
        return self.proc.returncode

    def stop(self) -> None:
        """SIGTERM, the server's own grace period (+5 s), then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=self.grace_s + 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def run_reloader(settings: Settings, console: Console, argv: list[str], dirs: list[Path]) -> int:
    """Serve, restarting on changes under ``dirs``, until SIGINT/SIGTERM; the exit code."""
    from rag_ray.runtime import ensure_milvus

    stop = threading.Event()
    shutdown = GracefulShutdown(stop, settings.shutdown_grace_s + 10)  # the child's grace, then ours
    shutdown.install()
    milvus = ensure_milvus(settings)
    server = ServerProcess(argv, settings.shutdown_grace_s, console)

    console.print(f"reload: watching {', '.join(str(d) for d in dirs)} for *.py changes")
    try:
        files = snapshot(dirs)
        server.start()
        while not stop.wait(POLL_S):
            now = snapshot(dirs)
            changed = changed_files(files, now)
            files = now
            if changed:
                console.print(f"reload: {changed[0]} changed{f' (+{len(changed) - 1} more)' if changed[1:] else ''};"
                              " restarting the server")
                server.stop()
                server.start()
            elif (code := server.exited()) is not None:
                console.print(f"[red]reload: the server exited with {code}[/red]; waiting for a change to restart")
        return 0
    finally:
        console.print("reload: stopping…")
        server.stop()
        if milvus is not None:
            milvus.stop()
