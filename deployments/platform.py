"""The Ray platform: jobs as Ray tasks running Ray Data pipelines, the HTTP API on Ray Serve.

Declared under the ``rag_ray.platforms`` entry point (pyproject), so ``rag_ray`` finds it by name (``RAG_PLATFORM``,
default ``ray``) without importing this package.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rag_ray.config import Settings
from rag_ray.ingest.file_ingest import FileIngestRequest, IngestSummary
from rag_ray.ingest.rdb_sync import RdbSyncRequest, RdbSyncSummary
from rag_ray.server.platform import Listeners


class RayPlatform:
    name = "ray"

    def launch(self, fn: Callable[..., Any], *args: Any) -> None:
        import ray

        # num_cpus=0: the driver mostly waits on the Ray Data pipeline it launches
        ray.remote(num_cpus=0, max_retries=0)(fn).remote(*args)

    def run_file_job(self, settings: Settings, request: FileIngestRequest, job_id: str | None = None,
                     listeners: Listeners = None, *, confine: bool = False) -> IngestSummary:
        from jobs.ingest_files import run_file_job

        return run_file_job(settings, request, job_id, list(listeners or []), confine=confine)

    def run_rdb_job(self, settings: Settings, request: RdbSyncRequest, job_id: str | None = None,
                    listeners: Listeners = None) -> RdbSyncSummary:
        from jobs.sync_rdb import run_rdb_job

        return run_rdb_job(settings, request, job_id, list(listeners or []), use_ray=True)

    def serve(self, settings: Settings, stop: threading.Event, on_ready: Callable[[str], None]) -> None:
        import ray
        from ray import serve

        from deployments.app import build_app
        from jobs.ray_executor import init_ray

        init_ray(settings)
        try:
            serve.start(http_options={"host": settings.api_host, "port": settings.api_port,
                                      "request_timeout_s": 300})
            serve.run(build_app(settings), name="rag", route_prefix="/", blocking=False)
            on_ready(f"http://{settings.api_host}:{settings.api_port}")
            stop.wait()
        finally:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
