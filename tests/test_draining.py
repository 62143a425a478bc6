"""Draining on the assembled app: once its stop begins, new requests (``/health`` too) get 503 ``shutting_down`` with
Retry-After while the ones in flight finish; and the signal a Ray server's routers wait on (run here without Ray).
End to end on Ray, with SIGTERM during a stream: ``test_server_lifecycle.py``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from deployments.drain import DrainRelay, DrainSignal
from rag_ray.api.app import create_app
from rag_ray.config import Settings
from rag_ray.llm.fake import FakeLLM
from rag_ray.store.milvus import ChunkStore
from tests.api_helpers import compose
from tests.live_server import ADMIN

CHAT = {"messages": [{"role": "user", "content": "hello?"}], "max_tokens": 16}


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)  # yields to the request in flight


def test_new_requests_get_503_while_those_in_flight_finish(make_settings: Callable[..., Settings],
                                                           fake_store: ChunkStore) -> None:
    fake = FakeLLM("echo", delay_s=1.0)
    app = create_app(compose(make_settings(mask_pii=False), store=fake_store, engine=fake))
    drain = app.state.drain

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response, int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/health")).status_code == 200
            held = asyncio.create_task(client.post("/chat", json=CHAT, headers=ADMIN))
            await asyncio.wait_for(_until(lambda: fake.active_generations == 1), 30)
            scraped = (await client.get("/metrics", headers=ADMIN)).text
            assert "\nrag_http_requests_in_flight 2\n" in scraped  # the chat and this scrape
            drain.begin()
            refused = await client.get("/health")
            refused_chat = await client.post("/chat", json=CHAT, headers=ADMIN)
            in_flight = drain.in_flight
            await asyncio.wait_for(drain.until_idle(), 30)
            return await held, refused, refused_chat, in_flight

    answered, refused, refused_chat, in_flight = asyncio.run(scenario())
    assert answered.status_code == 200 and answered.json()["answer"], answered.text
    assert in_flight == 1 and drain.in_flight == 0
    for response in (refused, refused_chat):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "shutting_down" and "shutting down" in response.json()["message"]
        assert response.headers["retry-after"] == "5" and response.headers["connection"] == "close"
        assert response.headers["x-request-id"]
    assert fake.calls == 1  # the refused chat never reached the model


def test_requests_still_running_when_their_time_is_up_are_cut_with_503_and_their_work_stops(
        make_settings: Callable[..., Settings], fake_store: ChunkStore) -> None:
    fake = FakeLLM("echo", delay_s=300.0)
    app = create_app(compose(make_settings(mask_pii=False), store=fake_store, engine=fake))
    drain = app.state.drain

    async def scenario() -> tuple[httpx.Response, int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            held = asyncio.create_task(client.post("/chat", json=CHAT, headers=ADMIN))
            await asyncio.wait_for(_until(lambda: fake.active_generations == 1), 30)
            drain.begin()
            cut = drain.cut()
            answered = await asyncio.wait_for(held, 30)
            await asyncio.wait_for(drain.until_idle(), 30)
            return answered, cut

    answered, cut = asyncio.run(scenario())
    assert cut == 1 and drain.in_flight == 0
    assert answered.status_code == 503, answered.text
    assert answered.json()["error"] == "shutting_down" and "RAG_SHUTDOWN_IN_FLIGHT_S" in answered.json()["message"]
    assert fake.cancelled == 1 and fake.active_generations == 0  # the model stopped, not left running


class _Call:
    def __init__(self, method: Callable[..., Any]):
        self.remote = method


class InProcessSignal:
    """A ``DrainSignal`` reached the way a router reaches the actor (``signal.method.remote(...)``), in this loop."""

    def __init__(self, signal: DrainSignal):
        self.until_stop, self.done = _Call(signal.until_stop), _Call(signal.done)


def test_a_router_cuts_what_outlasts_its_time_and_an_idle_one_cuts_nothing(
        make_settings: Callable[..., Settings], fake_store: ChunkStore) -> None:
    fake = FakeLLM("echo", delay_s=300.0)
    busy_app = create_app(compose(make_settings(mask_pii=False), store=fake_store, engine=fake))
    idle_app = create_app(compose(make_settings(mask_pii=False), store=fake_store, engine=fake))

    async def scenario() -> tuple[tuple[list[str], int], httpx.Response]:
        signal = DrainSignal()
        relays = [DrainRelay(InProcessSignal(signal), app.state.drain) for app in (busy_app, idle_app)]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=busy_app), base_url="http://t") as client:
            held = asyncio.create_task(client.post("/chat", json=CHAT, headers=ADMIN))
            await asyncio.wait_for(_until(lambda: fake.active_generations == 1 and len(signal.busy()) == 2), 30)
            stopped = await asyncio.wait_for(signal.stop(in_flight_s=0.2), 30)
            await asyncio.gather(*(relay.task for relay in relays))
            return stopped, await held

    (left, cut), answered = asyncio.run(scenario())
    assert left == [] and cut == 1  # the busy router's chat; the idle router reported at once, nothing cut
    assert answered.status_code == 503 and answered.json()["error"] == "shutting_down", answered.text
    assert fake.cancelled == 1


def test_in_flight_time_defaults_to_the_grace_less_the_rest_of_the_stop(make_settings: Callable[..., Settings]) -> None:
    assert make_settings().in_flight_s() == 15  # of the default 25 s grace
    assert make_settings(shutdown_grace_s=60).in_flight_s() == 50
    assert make_settings(shutdown_grace_s=8).in_flight_s() == 4  # at least half the grace
    assert make_settings(shutdown_in_flight_s=3).in_flight_s() == 3
    with pytest.raises(ValueError, match=r"RAG_SHUTDOWN_IN_FLIGHT_S \(25\) must be below RAG_SHUTDOWN_GRACE_S \(25\)"):
        make_settings(shutdown_in_flight_s=25)


def test_the_stop_waits_for_every_router_to_finish_and_not_for_one_that_withdrew() -> None:
    async def scenario() -> tuple[list[str], bool]:
        signal = DrainSignal()
        waiting = [asyncio.create_task(signal.until_stop(name)) for name in ("a", "b", "c")]
        await asyncio.sleep(0)  # each registers
        signal.done("c")  # Serve stopped that one on its own (scaled down)
        stopping = asyncio.create_task(signal.stop(in_flight_s=30))
        told = await asyncio.gather(*waiting)  # every router is told, with the time its requests get
        signal.done("a")
        await asyncio.sleep(0)
        still_waiting = not stopping.done()
        signal.done("b", cut=2)
        return told, await stopping, still_waiting

    told, (left, cut), waited_for_b = asyncio.run(scenario())
    assert told == [30, 30, 30]
    assert left == [] and cut == 2 and waited_for_b


def test_the_stop_gives_up_on_a_router_that_never_reports() -> None:
    async def scenario() -> list[str]:
        signal = DrainSignal()
        registered = asyncio.create_task(signal.until_stop("crashed"))
        await asyncio.sleep(0)
        left, _ = await signal.stop(in_flight_s=0.05)
        await registered  # told, but it never reports done
        return left

    assert asyncio.run(scenario()) == ["crashed"]


def test_the_stop_does_not_wait_for_a_router_that_crashed(ray_local: None) -> None:
    """On Ray: a router replica killed while registered never reports, and the stop finds it dead instead of
    waiting out the drain timeout (which, with Serve's stop after it, would overrun RAG_SHUTDOWN_GRACE_S)."""
    import ray

    @ray.remote(num_cpus=0)
    class Router:
        async def follow(self, signal: Any) -> None:
            await signal.until_stop.remote("crashed", ray.get_runtime_context().current_actor)

    signal: Any = ray.remote(DrainSignal).options(num_cpus=0).remote()
    router = Router.remote()  # type: ignore[attr-defined]
    router.follow.remote(signal)
    deadline = time.monotonic() + 60
    while ray.get(signal.busy.remote()) != ["crashed"]:
        assert time.monotonic() < deadline, "the router never registered"
        time.sleep(0.05)
    ray.kill(router)
    assert ray.get(signal.stop.remote(in_flight_s=120), timeout=180) == ([], 0)
    ray.kill(signal)
