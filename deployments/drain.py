"""Draining on Ray: the server tells every router replica that it is stopping, and waits until each has answered the
requests it holds before Serve deletes the app.

Without it, deleting the app was the first step: Serve's proxy dropped the route at once, so a new request got 404
(``/health`` too) and a request in flight that still had to call the embedder or an LLM found them stopping. Now new
requests get 503 ``shutting_down`` from the routers (``rag_ray.api.draining``) while the ones in flight finish with
every deployment up; only then is the app deleted.

``DrainSignal`` is a named actor of the server that started Serve (``rag-server``, ``rag-cli serve``). Each router
replica waits on it with one call that returns when the stop begins. Served without it (``serve run
deployments.serve_config.yaml``), a router has nothing to wait on and Serve stops it as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import ray

from rag_ray.api.draining import Drain

log = logging.getLogger(__name__)
SIGNAL_NAME = "rag-drain"
SIGNAL_NAMESPACE = "rag-ray"
# what a router's requests in flight get at a stop: its drain here, and Serve's graceful_shutdown_timeout_s
DRAIN_TIMEOUT_S = 20.0


class DrainSignal:
    """Router replicas register by waiting in ``until_stop``; ``stop`` wakes them all and returns once every one
    of them has reported ``done`` (its requests in flight answered) or ``timeout_s`` has passed."""

    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self._busy: set[str] = set()
        self._all_done = asyncio.Event()

    async def until_stop(self, replica: str) -> None:
        self._busy.add(replica)
        self._all_done.clear()
        await self._stopping.wait()

    def done(self, replica: str) -> None:
        self._busy.discard(replica)
        if not self._busy:
            self._all_done.set()

    async def stop(self, timeout_s: float) -> list[str]:
        """The replicas still busy after ``timeout_s`` (a replica that died while registered stays in the list)."""
        self._stopping.set()
        if self._busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_done.wait(), timeout_s)
        return sorted(self._busy)


def start_signal() -> Any:
    """The server's signal; Serve is started after it, so every router replica finds it."""
    remote: Any = ray.remote(DrainSignal)
    return remote.options(name=SIGNAL_NAME, namespace=SIGNAL_NAMESPACE, num_cpus=0, max_restarts=0).remote()


def drain_routers(signal: Any, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """New requests get 503 from here on; returns when the routers' requests in flight are answered."""
    log.info("draining: new requests get 503; the requests in flight get up to %gs to finish", timeout_s)
    start = time.monotonic()
    try:
        left = ray.get(signal.stop.remote(timeout_s), timeout=timeout_s + 10)
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
        log.warning("the routers could not be told to drain (%s); Serve's stop closes what is in flight", exc)
        return
    if left:
        log.warning("%d router replica(s) still answering after %gs; Serve's stop closes those requests",
                    len(left), timeout_s)
    else:
        log.info("drained in %.1fs", time.monotonic() - start)


class DrainRelay:
    """In a router replica: begins its ``Drain`` when the server stops, and reports once the replica's requests in
    flight are answered. A replica Serve stops on its own (scaled down, replaced) withdraws, so the stop does not
    wait for it; one that crashed is waited for until the timeout."""

    def __init__(self, signal: Any, drain: Drain):
        self.signal, self.drain, self.replica = signal, drain, uuid.uuid4().hex
        self.task = asyncio.get_running_loop().create_task(self._relay())

    @classmethod
    def follow(cls, drain: Drain) -> DrainRelay | None:
        """None when no server signal exists (Serve run without ``rag-server``)."""
        try:
            return cls(ray.get_actor(SIGNAL_NAME, namespace=SIGNAL_NAMESPACE), drain)
        except ValueError:
            return None

    async def _relay(self) -> None:
        try:
            await self.signal.until_stop.remote(self.replica)
            self.drain.begin()
            await self.drain.until_idle()
        except ray.exceptions.RayActorError:  # the server that owned the signal is gone: Serve goes with it
            return
        self._report_done()

    def withdraw(self) -> None:
        with contextlib.suppress(RuntimeError):  # at interpreter exit, the loop may be closed already
            self.task.cancel()
        self._report_done()

    def _report_done(self) -> None:
        with contextlib.suppress(ray.exceptions.RayActorError):
            self.signal.done.remote(self.replica)
