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
    from ray import serve

    from deployments.app import build_app
    from jobs.ray_executor import init_ray
    from rag_ray.runtime import ensure_milvus

    stop = stop or threading.Event()
    milvus = ensure_milvus(settings)
    try:
        console.print(f"vector store: {settings.milvus_address} ({'Milvus Lite' if milvus else 'external'})")
        bootstrap(settings, console)
        init_ray(settings)
        serve.start(http_options={"host": settings.api_host, "port": settings.api_port, "request_timeout_s": 300})
        with console.status("starting Ray Serve deployments (models load once)…"):
            serve.run(build_app(settings), name="rag", route_prefix="/", blocking=False)
        url = f"http://{settings.api_host}:{settings.api_port}"
        console.print(f"[bold green]rag-ray is up[/bold green] at {url} (docs: {url}/docs) — Ctrl-C stops it")
        _wait(stop)
    finally:
        console.print("shutting down…")
        _shutdown(milvus)


def _wait(stop: threading.Event) -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _shutdown(milvus: object) -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
        if milvus is not None:
            milvus.stop()  # type: ignore[attr-defined]
