"""`rag-cli serve`: local Ray + Milvus Lite + Ray Serve app, until Ctrl-C."""

from __future__ import annotations

import signal
import threading

from rich.console import Console

from rag_ray.config import Settings


def bootstrap(settings: Settings, console: Console) -> None:
    """Migrate the metadata DB and create the first admin (a generated password is printed once)."""
    from rag_ray.access.bootstrap import bootstrap_admin
    from rag_ray.metadata import MetadataDB

    db = MetadataDB(settings.metadata_url)
    try:
        password = bootstrap_admin(settings, db)
    finally:
        db.dispose()
    if password:
        console.print(f"[bold yellow]created admin user[/bold yellow] {settings.admin_username!r} with password "
                      f"[bold]{password}[/bold] (shown once; set RAG_ADMIN_PASSWORD to choose it)")


def run_server(settings: Settings, console: Console, *, stop: threading.Event | None = None) -> None:
    """The embedded default, or the configured services, hosted by ``RAG_PLATFORM`` (Ray Serve by default)."""
    from rag_ray.runtime import ensure_milvus
    from rag_ray.server.platform import load_platform

    stop = stop or threading.Event()
    platform = load_platform(settings.platform)
    milvus = ensure_milvus(settings)
    try:
        console.print(f"vector store: {settings.milvus_address} ({'Milvus Lite' if milvus else 'external'})")
        bootstrap(settings, console)
        _handle_signals(stop)
        with console.status(f"starting the server on {platform.name} (models load once)…") as status:
            def ready(url: str) -> None:
                status.stop()
                console.print(f"[bold green]rag-ray is up[/bold green] at {url} (docs: {url}/docs) — Ctrl-C stops it")

            platform.serve(settings, stop, ready)
    finally:
        console.print("shutting down…")
        if milvus is not None:
            milvus.stop()


def _handle_signals(stop: threading.Event) -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
