"""The Ray platform: jobs as Ray tasks running Ray Data pipelines, the HTTP API on Ray Serve.

Declared under the ``rag_ray.platforms`` entry point (pyproject), so ``rag_ray`` finds it by name (``RAG_PLATFORM``,
default ``ray``) without importing this package.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rag_ray.config import Settings
from rag_ray.ingest.file_ingest import FileIngestRequest, IngestSummary
from rag_ray.ingest.rdb_sync import RdbSyncRequest, RdbSyncSummary
from rag_ray.server.platform import Listeners
from rag_ray.store.lite_server import free_port

log = logging.getLogger(__name__)
APP_NAME = "rag"
SERVE_STOP_TIMEOUT_S = 30.0  # serve.shutdown()'s own


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
        from deployments.drain import drain_routers, start_signal
        from jobs.ray_executor import init_ray

        with ingress(settings):
            init_ray(settings)
            drain = start_signal()  # before Serve: every router replica finds it
            try:
                serve.start(http_options={"host": settings.api_host, "port": settings.api_port,
                                          "request_timeout_s": 300})
                serve.run(build_app(settings), name=APP_NAME, route_prefix="/", blocking=False)
                on_ready(f"http://{settings.api_host}:{settings.api_port}")
                stop.wait()
            finally:
                try:
                    drain_routers(drain, settings.in_flight_s())  # new requests get 503; those in flight finish
                    finish_in_flight()
                    stop_serve()
                finally:
                    ray.shutdown()


def finish_in_flight() -> None:
    """Delete the app while the proxies (or HAProxy) still answer, so any request still in flight finishes: Serve's
    own shutdown closes them at once, cutting a response being read. Nothing to do if Serve never started."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    with contextlib.suppress(RayServeException):
        serve.delete(APP_NAME)


def stop_serve(timeout_s: float = SERVE_STOP_TIMEOUT_S) -> None:
    """Stop Serve's controller and all it runs, without the line Ray printed at every stop ("Task
    ServeController.graceful_shutdown failed … killed by ray.kill"): ``serve.shutdown()`` waits on a call its
    controller never answers, since the controller kills itself once everything is down, and Ray reports that call as
    a failed task. Here the call returns at once and the stop waits for the controller to be gone, up to ``timeout_s``
    (then ``ray.shutdown`` takes what is left)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    def controller() -> Any:
        try:
            return ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:  # never started, or gone
            return None

    running = controller()
    if running is None:
        return
    try:
        ray.get(running.graceful_shutdown.remote(wait=False), timeout=timeout_s)
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:  # as serve.shutdown() takes them
        log.warning("Serve's controller did not take the stop (%s); Ray's shutdown takes what is left", exc)
        return
    deadline = time.monotonic() + timeout_s
    while controller() is not None and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the GCS: Serve offers nothing to wait on


def serve_env(variable: str, setting: str, settings: Settings) -> None:
    """Turn on a Serve switch read from the environment by the Ray this server starts (its controller, proxies and
    replicas inherit it); a cluster's nodes read their own environment."""
    os.environ[variable] = "1"
    if settings.ray_address:
        log.warning("%s reaches a Ray this server starts; on the cluster at RAY_ADDRESS, set %s=1 in the nodes' "
                    "environment (cluster.yaml)", setting, variable)


DRAIN_VARIABLE = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"  # RAG_SERVE_DRAIN_S
# Serve has HAProxy log every request a second time, to a socket its HAProxyManager actor parses into Ray metrics; the
# router's /metrics counts the same requests. Off: that actor 0.022 → 0.007 cores at ~155 requests/s on 2 cores.
HAPROXY_REQUEST_METRICS_VARIABLE = "RAY_SERVE_HAPROXY_METRICS_ENABLED"
HAPROXY_SIDE_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")


@contextmanager
def ingress(settings: Settings) -> Iterator[None]:
    """The environment Serve reads for ``RAG_SERVE_INGRESS`` and ``RAG_SERVE_THROUGHPUT_OPTIMIZED``, set before the
    local Ray starts: Serve's controller, proxies and replicas run under that Ray and inherit it. HAProxy (the
    binary ``ray[serve]`` bundles, or ``RAY_SERVE_HAPROXY_BINARY_PATH``) keeps its config and admin socket in a
    directory of this server's own, not Serve's shared ``/tmp/haproxy-serve``, so two servers on one machine do not
    rewrite each other's config. A stopping router replica stays open to new connections for ``RAG_SERVE_DRAIN_S``,
    not Serve's 30 s. HAProxy logs no second line per request for Serve's own request metrics unless the operator
    asks."""
    if settings.serve_throughput_optimized:
        serve_env("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAG_SERVE_THROUGHPUT_OPTIMIZED", settings)
    if settings.serve_ingress != "haproxy":
        yield
        return
    serve_env("RAY_SERVE_ENABLE_HA_PROXY", "RAG_SERVE_INGRESS=haproxy", settings)
    os.environ[DRAIN_VARIABLE] = f"{settings.serve_drain_s:g}"  # Serve's 30 s would outlast the stop's grace
    os.environ.setdefault(HAPROXY_REQUEST_METRICS_VARIABLE, "0")  # an operator's 1 brings them back
    home = Path(tempfile.mkdtemp(prefix="rag-haproxy-"))  # short: a unix socket path has ~100 bytes
    os.environ.update({"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(home / "haproxy.cfg"),
                       "RAY_SERVE_HAPROXY_SOCKET_PATH": str(home / "admin.sock"),
                       "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(home),
                       "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(home / "server-state")})
    for variable in HAPROXY_SIDE_PORTS:  # Serve's fixed 8404 / 9101 would collide with a second server's
        os.environ.setdefault(variable, str(free_port()))
    log.warning("HAProxy's stats page (:%s/stats) and Prometheus metrics (:%s/metrics) listen on every interface, "
                "without authentication; keep those ports behind a firewall (set %s to pin them)",
                os.environ["RAY_SERVE_HAPROXY_STATS_PORT"], os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"],
                " / ".join(HAPROXY_SIDE_PORTS))
    try:
        yield
    finally:
        shutil.rmtree(home, ignore_errors=True)
