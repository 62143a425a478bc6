"""Where jobs run and how the server is hosted.

``Platform`` is the seam between the library and its runtime: the library calls it, ``LocalPlatform`` implements it
in-process (threads, the local executor, uvicorn), and ``deployments.platform.RayPlatform`` on Ray (Ray Data jobs,
Ray Serve). Platforms are found by name: the built-in ``local``, then the ``rag_ray.platforms`` entry points that
packages declare (``ray`` in this project's pyproject) — so ``rag_ray`` never imports ``jobs`` or ``deployments``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any, Protocol

from rag_ray.api.draining import CUT_UNWIND_S, Drain, drain_then_cut
from rag_ray.config import Settings
from rag_ray.embedding import Embedder
from rag_ray.errors import ConfigError
from rag_ray.ingest.executor import LocalExecutor
from rag_ray.ingest.file_ingest import FileIngestor, FileIngestRequest, IngestSummary
from rag_ray.ingest.notify import callback_listeners
from rag_ray.ingest.rdb_sync import RdbIngestor, RdbSyncRequest, RdbSyncSummary
from rag_ray.ingest.source_acl import SourceAclMap
from rag_ray.ingest.tracking import ProgressListener
from rag_ray.runtime import Runtime, ensure_milvus
from rag_ray.sources.rdb.state import mark_synced

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "rag_ray.platforms"

Listeners = Sequence[ProgressListener] | None


class Platform(Protocol):
    name: str

    def launch(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in the background; it records its own outcome (job status) in the metadata DB."""
        ...

    def run_file_job(self, settings: Settings, request: FileIngestRequest, job_id: str | None = None,
                     listeners: Listeners = None, *, confine: bool = False) -> IngestSummary: ...

    def run_rdb_job(self, settings: Settings, request: RdbSyncRequest, job_id: str | None = None,
                    listeners: Listeners = None) -> RdbSyncSummary: ...

    def serve(self, settings: Settings, stop: threading.Event, on_ready: Callable[[str], None]) -> None:
        """Host the HTTP API until ``stop`` is set; ``on_ready(url)`` once it answers."""
        ...


def run_file_ingest(platform: Platform, settings: Settings, request: FileIngestRequest, job_id: str,
                    confine: bool) -> dict[str, object]:
    """A background file job's body (``FileJobService`` launches it through ``platform.launch``)."""
    return platform.run_file_job(settings, request, job_id, confine=confine).to_dict()


def run_rdb_sync(platform: Platform, settings: Settings, request: RdbSyncRequest, job_id: str) -> dict[str, object]:
    return platform.run_rdb_job(settings, request, job_id).to_dict()


class LocalPlatform:
    """Everything in this process: jobs in threads over the local executor, the API under uvicorn. ``embedder``:
    the collection embedder jobs use (default: built from the settings)."""

    name = "local"

    def __init__(self, embedder: Embedder | None = None):
        self.embedder = embedder

    def launch(self, fn: Callable[..., Any], *args: Any) -> None:
        threading.Thread(target=_guarded, args=(fn, args), daemon=True, name="rag-job").start()

    def run_file_job(self, settings: Settings, request: FileIngestRequest, job_id: str | None = None,
                     listeners: Listeners = None, *, confine: bool = False) -> IngestSummary:
        roots = settings.resolved_allowed_roots if confine else None
        with vector_store_running(settings), Runtime(settings, embedder=self.embedder) as runtime, \
                callback_listeners(settings, request) as callbacks:
            executor = LocalExecutor.from_settings(settings)
            ingestor = FileIngestor(runtime.db, runtime.store, executor, runtime.stages(), allowed_roots=roots,
                                    source_acl=SourceAclMap.from_settings(settings))
            return ingestor.run(request, job_id=job_id, listeners=[*(listeners or []), *callbacks])

    def run_rdb_job(self, settings: Settings, request: RdbSyncRequest, job_id: str | None = None,
                    listeners: Listeners = None) -> RdbSyncSummary:
        with vector_store_running(settings), Runtime(settings, embedder=self.embedder) as runtime:
            executor = LocalExecutor.from_settings(settings, batch_size=256)
            ingestor = RdbIngestor(runtime.db, runtime.store, executor, runtime.stages(),
                                   chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap)
            summary = ingestor.run(request, job_id=job_id, listeners=list(listeners or []))
            if request.source_name and summary.status == "succeeded":
                mark_synced(runtime.db, request.source_name, summary.job_id)
            return summary

    def serve(self, settings: Settings, stop: threading.Event, on_ready: Callable[[str], None]) -> None:
        import uvicorn

        from rag_ray.server.backends import LocalBackends
        from rag_ray.server.compose import build_app

        app = asyncio.run(build_app(settings, LocalBackends(settings)))
        # uvicorn's own lines go through the process's logging (rag_ray.observability.logs); the app logs each request
        config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_level="warning",
                                log_config=None, access_log=False, timeout_graceful_shutdown=int(CUT_UNWIND_S))
        server = uvicorn.Server(config)
        on_ready(f"http://{settings.api_host}:{settings.api_port}")
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:  # uvloop, as uvicorn.run would
            runner.run(serve_until(server, app.state.drain, stop, settings.in_flight_s()))


async def serve_until(server: Any, drain: Drain, stop: threading.Event, in_flight_s: float) -> None:
    """Run the uvicorn ``server`` until ``stop`` is set, then drain it as on Ray: new requests get 503, those in
    flight get ``in_flight_s`` (``RAG_SHUTDOWN_IN_FLIGHT_S``) and are then cut, and only then does uvicorn stop."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    threading.Thread(target=_relay_stop, args=(stop, loop, stopping), daemon=True, name="rag-stop").start()
    serving = asyncio.create_task(server.serve())
    waiting = asyncio.create_task(stopping.wait())
    await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if not serving.done():
        await drain_then_cut(drain, in_flight_s)
        server.should_exit = True
    await serving


def _relay_stop(stop: threading.Event, loop: asyncio.AbstractEventLoop, stopping: asyncio.Event) -> None:
    stop.wait()
    with contextlib.suppress(RuntimeError):  # the loop has closed: the server stopped on its own
        loop.call_soon_threadsafe(stopping.set)


def _guarded(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception as exc:  # the job records its own failure; messages may quote connection details
        log.warning("background job %s failed: %s", getattr(fn, "__name__", fn), type(exc).__name__)


BUILTIN: dict[str, Callable[[], Platform]] = {"local": LocalPlatform}


def load_platform(name: str) -> Platform:
    """The platform called ``name``: built in, or declared by a package under the ``rag_ray.platforms`` entry points."""
    if name in BUILTIN:
        return BUILTIN[name]()
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        known = sorted({*BUILTIN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})
        raise ConfigError(f"unknown platform {name!r} (known: {', '.join(known)})", field="RAG_PLATFORM")
    factory: Callable[[], Platform] = next(iter(found)).load()
    return factory()


@contextmanager
def vector_store_running(settings: Settings) -> Iterator[None]:
    """Milvus Lite for the duration of a job when no server is reachable (a CLI run without `rag-cli serve`)."""
    started = ensure_milvus(settings)
    try:
        yield
    finally:
        if started is not None:
            started.stop()
