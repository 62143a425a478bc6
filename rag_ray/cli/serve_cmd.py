"""`rag-cli serve` / `rag-server`: Milvus Lite (unless an external Milvus is configured), the metadata DB and the HTTP
API hosted by ``RAG_PLATFORM``, until SIGINT or SIGTERM.

Shutdown contract (what `docker stop` and Kubernetes rely on):
- the first SIGINT/SIGTERM stops the server in order: the platform finishes in-flight requests and stops (uvicorn, or
  Ray Serve and the local Ray), then Milvus Lite; the process exits 0;
- if that takes longer than ``RAG_SHUTDOWN_GRACE_S`` (default 25 s), or a second signal arrives (a second or more
  after the first: one stop request often arrives twice, see ``REPEAT_WINDOW_S``), it kills Milvus Lite and exits 1
  at once;
- whatever ends the process, SIGKILL included, what it started goes with it: Milvus Lite by ``PR_SET_PDEATHSIG``
  (``rag_ray.store.lite_server``), the local Ray's processes by Ray's own fate sharing (the same mechanism).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

from rag_ray.config import Settings

FORCED_EXIT_CODE = 1
# One stop request often arrives twice: a supervisor that signals the whole process group (systemd's control-group
# stop, a terminal or IDE outside a TTY) reaches the server and the launcher it runs under, and the launcher forwards
# it too (`uv run`: SIGTERM at once, SIGINT 200 ms later). A repeat this soon is that same request, not a second one.
REPEAT_WINDOW_S = 1.0


def bootstrap(settings: Settings, console: Console) -> None:
    """Migrate the metadata DB and create the first admin (a generated password is printed once)."""
    from rag_ray.access.bootstrap import bootstrap_admin
    from rag_ray.metadata import MetadataDB

    db = MetadataDB.from_settings(settings)
    try:
        password = bootstrap_admin(settings, db)
    finally:
        db.dispose()
    if password:
        console.print(f"[bold yellow]created admin user[/bold yellow] {settings.admin_username!r} with password "
                      f"[bold]{password}[/bold] (shown once; set RAG_ADMIN_PASSWORD to choose it)")


def serve_command(settings: Settings, console: Console, *, reload: bool = False,
                  reload_dirs: list[Path] | None = None) -> None:
    """What `rag-cli serve` and `rag-server` run: the server, or with ``reload`` a watcher that restarts it."""
    if not reload:
        run_server(settings, console)
        ignore_late_stop_signals()
        return
    if settings.app_env == "production":
        console.print("[red]--reload is a development option; APP_ENV=production refuses it[/red]")
        raise typer.Exit(2)
    from rag_ray.cli.reloader import default_watch_dirs, run_reloader, server_argv

    code = run_reloader(settings, console, server_argv(sys.argv[1:]), reload_dirs or default_watch_dirs())
    ignore_late_stop_signals()
    raise typer.Exit(code)


def ignore_late_stop_signals() -> None:
    """Once the server has stopped, the process only exits: a late copy of the stop signal (``REPEAT_WINDOW_S``)
    must not kill it on the way out, as it would once Python resets its handlers at exit (130 after a clean stop)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def run_server(settings: Settings, console: Console, *, stop: threading.Event | None = None) -> None:
    """The embedded default, or the configured services, hosted by ``RAG_PLATFORM`` (Ray Serve by default)."""
    from rag_ray.runtime import ensure_milvus
    from rag_ray.server.platform import load_platform

    shutdown = GracefulShutdown(stop or threading.Event(), settings.shutdown_grace_s)
    shutdown.install()
    platform = load_platform(settings.platform)
    milvus = ensure_milvus(settings)
    try:
        console.print(f"vector store: {settings.milvus_address} ({'Milvus Lite' if milvus else 'external'})")
        bootstrap(settings, console)
        with console.status(f"starting the server on {platform.name} (models load once)…") as status:
            def ready(url: str) -> None:
                status.stop()
                console.print(f"[bold green]rag-ray is up[/bold green] at {url} (docs: {url}/docs) — Ctrl-C stops it")

            serve_off_the_main_thread(lambda: platform.serve(settings, shutdown.stop, ready), shutdown.install)
    finally:
        console.print("shutting down…")
        if milvus is not None:
            milvus.stop()


def serve_off_the_main_thread(serve: Callable[[], None], keep_handlers: Callable[[], None]) -> None:
    """Run ``serve`` in a thread and wait for it here, re-installing our signal handlers as we wait.

    Signal handlers belong to the main thread, and what a platform runs there would take them over (uvicorn captures
    SIGINT/SIGTERM while it serves, ``ray.init`` sets SIGTERM to ``sys.exit``); off the main thread they leave them
    alone. Ray's C++ core worker still installs a crash handler that aborts on SIGTERM, below Python, from any thread;
    ``keep_handlers`` puts ours back on every tick, so the grace period holds on every platform.
    """
    failure: list[BaseException] = []
    # ray.init off the main thread warns that it set no SIGTERM handler: by design, ours is the one that counts
    logging.getLogger("ray._private.worker").addFilter(lambda r: "SIGTERM handler is not set" not in r.getMessage())

    def run() -> None:
        try:
            serve()
        except BaseException as exc:  # SystemExit included (uvicorn exits when it cannot bind): re-raised below
            failure.append(exc)

    thread = threading.Thread(target=run, name="rag-serve")
    thread.start()
    while thread.is_alive():
        keep_handlers()
        thread.join(0.5)  # signal handlers run on this thread while it waits
    if failure:
        raise failure[0]


class GracefulShutdown:
    """SIGINT/SIGTERM → ``stop``; past ``grace_s`` after the first one, or on a second one: kill every process we
    started (Milvus Lite, a reloader's server, Ray and what its workers run) and exit with ``FORCED_EXIT_CODE``."""

    def __init__(self, stop: threading.Event, grace_s: float, repeat_window_s: float = REPEAT_WINDOW_S):
        self.stop = stop
        self.grace_s = grace_s
        self.repeat_window_s = repeat_window_s
        self._first_signal_at: float | None = None
        self._timer: threading.Timer | None = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        now = time.monotonic()
        if self._first_signal_at is not None and now - self._first_signal_at < self.repeat_window_s:
            return  # the first request, delivered twice
        if self.stop.is_set():
            self.force(f"second {signal.Signals(signum).name}")
        self._first_signal_at = now
        self.stop.set()
        if self._timer is None:
            self._timer = threading.Timer(self.grace_s, self.force,
                                          args=(f"not stopped within RAG_SHUTDOWN_GRACE_S={self.grace_s:g}s",))
            self._timer.daemon = True
            self._timer.start()

    def force(self, reason: str) -> None:
        # os.write: safe from a signal handler or a timer thread whatever the console is doing
        os.write(2, f"rag-ray: {reason}; stopping now\n".encode())
        try:
            kill_descendants()
        finally:
            os._exit(FORCED_EXIT_CODE)


def kill_descendants() -> None:
    """SIGKILL every process this one started, however deep (Ray's workers, the HAProxy a Serve actor runs):
    ``PR_SET_PDEATHSIG`` reaches only direct children, and a grandchild they orphan keeps its ports (the API's)."""
    import psutil

    for process in psutil.Process().children(recursive=True):  # listed before any dies: none is missed
        with contextlib.suppress(psutil.Error):
            process.kill()
