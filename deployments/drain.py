"""Draining on Ray: the server tells every router replica that it is stopping, and waits until each has answered the
requests it holds — or cut those still running after ``RAG_SHUTDOWN_IN_FLIGHT_S`` — before Serve deletes the app.

Without it, deleting the app was the first step: Serve's proxy dropped the route at once, so a new request got 404
(``/health`` too) and a request in flight that still had to call the embedder or an LLM found them stopping. Now new
requests get 503 ``shutting_down`` from the routers (``rag_ray.api.draining``) while the ones in flight finish with
every deployment up; only then is the app deleted. A request that outlasts its share of the grace (a long stream) is
cut, so the rest of the stop still fits in ``RAG_SHUTDOWN_GRACE_S`` and ends in order rather than forced.

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

from rag_ray.api.draining import CUT_UNWIND_S, Drain, drain_then_cut

log = logging.getLogger(__name__)
SIGNAL_NAME = "rag-drain"
SIGNAL_NAMESPACE = "rag-ray"
PROBE_EVERY_S = 1.0  # how often a stop checks that the replicas it waits for are alive


class DrainSignal:
    """Router replicas register by waiting in ``until_stop``, which returns the seconds their requests in flight get
    once the stop begins. ``stop`` wakes them all and returns once every one of them has reported ``done`` or has
    died, or the requests' time and then ``CUT_UNWIND_S`` have passed."""

    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self._in_flight_s = 0.0
        self._busy: dict[str, Any] = {}  # replica -> its actor handle (None: not probed)
        self._all_done = asyncio.Event()
        self.cut = 0  # requests the replicas cut

    async def until_stop(self, replica: str, actor: Any = None) -> float:
        self._busy[replica] = actor
        self._all_done.clear()
        await self._stopping.wait()
        return self._in_flight_s

    def done(self, replica: str, cut: int = 0) -> None:
        self.cut += cut
        self._busy.pop(replica, None)
        if not self._busy:
            self._all_done.set()

    def busy(self) -> list[str]:
        return sorted(self._busy)

    async def stop(self, in_flight_s: float) -> tuple[list[str], int]:
        """The replicas still busy at the end, and how many requests were cut. A replica that crashed (or that Serve
        stopped without its destructor) never reports: a probe every ``PROBE_EVERY_S`` finds it dead."""
        self._in_flight_s = in_flight_s
        self._stopping.set()
        deadline = time.monotonic() + in_flight_s + CUT_UNWIND_S
        while self._busy and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_done.wait(), min(left, PROBE_EVERY_S))
            await self._forget_the_dead()
        return self.busy(), self.cut

    async def _forget_the_dead(self) -> None:
        probed = {replica: actor for replica, actor in self._busy.items() if actor is not None}
        alive = await asyncio.gather(*(_alive(actor) for actor in probed.values()))
        for replica, is_alive in zip(probed, alive, strict=True):
            if not is_alive:
                self.done(replica)


async def _alive(actor: Any) -> bool:
    """False only when Ray says the actor is dead; a busy one may take its time to answer."""
    try:
        await asyncio.wait_for(actor.__ray_ready__.remote(), PROBE_EVERY_S)
    except ray.exceptions.RayActorError:
        return False
    except TimeoutError:
        pass
    return True


def start_signal() -> Any:
    """The server's signal; Serve is started after it, so every router replica finds it."""
    remote: Any = ray.remote(DrainSignal)
    return remote.options(name=SIGNAL_NAME, namespace=SIGNAL_NAMESPACE, num_cpus=0, max_restarts=0).remote()


def drain_routers(signal: Any, in_flight_s: float) -> None:
    """New requests get 503 from here on; returns when the routers' requests in flight are answered, or cut after
    ``in_flight_s``."""
    log.info("draining: new requests get 503; the requests in flight get up to %gs to finish "
             "(RAG_SHUTDOWN_IN_FLIGHT_S)", in_flight_s)
    start = time.monotonic()
    try:
        left, cut = ray.get(signal.stop.remote(in_flight_s), timeout=in_flight_s + CUT_UNWIND_S + 10)
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
        log.warning("the routers could not be told to drain (%s); Serve's stop closes what is in flight", exc)
        return
    if cut:
        log.warning("%d request(s) still running after %gs were cut (RAG_SHUTDOWN_IN_FLIGHT_S)", cut, in_flight_s)
    if left:
        log.warning("%d router replica(s) still answering; Serve's stop closes those requests", len(left))
    else:
        log.info("drained in %.1fs", time.monotonic() - start)


class DrainRelay:
    """In a router replica: begins its ``Drain`` when the server stops, cuts the requests still in flight when their
    time is up, and reports once none is left. A replica Serve stops on its own (scaled down, replaced) withdraws,
    and one that crashed is found dead, so the stop waits for neither."""

    def __init__(self, signal: Any, drain: Drain, actor: Any = None):
        """``actor``: this replica's handle, by which the stop can tell that it died."""
        self.signal, self.drain, self.actor, self.replica = signal, drain, actor, uuid.uuid4().hex
        self.task = asyncio.get_running_loop().create_task(self._relay())

    @classmethod
    def follow(cls, drain: Drain) -> DrainRelay | None:
        """None when no server signal exists (Serve run without ``rag-server``)."""
        try:
            signal = ray.get_actor(SIGNAL_NAME, namespace=SIGNAL_NAMESPACE)
        except ValueError:
            return None
        return cls(signal, drain, ray.get_runtime_context().current_actor)

    async def _relay(self) -> None:
        try:
            in_flight_s = await self.signal.until_stop.remote(self.replica, self.actor)
        except ray.exceptions.RayActorError:  # the server that owned the signal is gone: Serve goes with it
            return
        self._report_done(await drain_then_cut(self.drain, in_flight_s))

    def withdraw(self) -> None:
        with contextlib.suppress(RuntimeError):  # at interpreter exit, the loop may be closed already
            self.task.cancel()
        self._report_done()

    def _report_done(self, cut: int = 0) -> None:
        with contextlib.suppress(ray.exceptions.RayActorError):
            self.signal.done.remote(self.replica, cut)
