"""Request deadlines through HTTP on the assembled server: per-route defaults, per-request timeouts (header and body),
the remaining budget passed down to the provider, 504 with a clear message, and nothing left running afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from rag_ray.config import Settings
from rag_ray.llm.fake import FakeLLM
from rag_ray.store.milvus import ChunkStore
from rag_ray.testing.fake_servers import FakeOpenAIServer
from tests.api_helpers import compose
from tests.job_helpers import wait_until
from tests.live_server import ADMIN, live_server, metric

CHAT = {"messages": [{"role": "user", "content": "hello?"}], "max_tokens": 16}
QUERY = {"query": "what is a deadline?", "mode": "rag", "max_tokens": 16}


def slow_server(settings: Settings, store: ChunkStore, delay_s: float = 60.0) -> tuple[FakeLLM, Any]:
    fake = FakeLLM("echo", delay_s=delay_s)
    return fake, compose(settings.model_copy(update={"mask_pii": False}), store=store, engine=fake)


def test_a_provider_that_never_answers_ends_at_the_deadline(make_settings: Callable[..., Settings],
                                                            fake_store: ChunkStore) -> None:
    with FakeOpenAIServer() as upstream:
        upstream.hold()
        settings = make_settings(llm_provider="openai", llm_model="fake-model", llm_base_url=upstream.base_url,
                                 llm_api_key="k")
        with live_server(compose(settings, store=fake_store)) as url:
            held = httpx.post(f"{url}/chat", json=CHAT, headers={**ADMIN, "X-Request-Timeout": "3"}, timeout=60)
            assert held.status_code == 504, held.text
            body = held.json()
            assert body["error"] == "timeout" and "within its 3s deadline" in body["message"]
            assert "waiting for openai:fake-model" in body["message"] and "X-Request-Timeout" in body["message"]
            wait_until(lambda: upstream.held >= 1 and upstream.released == upstream.held, 30,
                       "the provider to see the connection closed")
            upstream.hold(False)
            answered = httpx.post(f"{url}/chat", json=CHAT, headers=ADMIN, timeout=60)
            assert answered.status_code == 200 and answered.json()["answer"] == upstream.text


def test_the_route_default_bounds_the_request_and_the_budget_reaches_the_provider(
        make_settings: Callable[..., Settings], fake_store: ChunkStore) -> None:
    fake, services = slow_server(make_settings(chat_timeout_s=3.0), fake_store)
    with live_server(services) as url:
        response = httpx.post(f"{url}/chat", json=CHAT, headers=ADMIN, timeout=60)
        assert response.status_code == 504 and "RAG_CHAT_TIMEOUT_S" in response.json()["message"]
        wait_until(lambda: fake.active_generations == 0, 30, "the generation to stop")
        assert fake.cancelled == 1
        [params] = fake.params
        assert params.timeout_s is not None and 0 < params.timeout_s <= 3.0


def test_a_body_timeout_replaces_the_route_default(make_settings: Callable[..., Settings],
                                                   fake_store: ChunkStore) -> None:
    fake, services = slow_server(make_settings(generate_timeout_s=300.0), fake_store)
    with live_server(services) as url:
        response = httpx.post(f"{url}/generate/single", json={"query": "why?", "max_tokens": 16, "timeout_s": 3},
                              headers=ADMIN, timeout=60)
        assert response.status_code == 504
        assert "within its 3s deadline" in response.json()["message"] and "timeout_s" in response.json()["message"]
        wait_until(lambda: fake.active_generations == 0, 30, "the generation to stop")
        assert fake.cancelled == 1


def test_a_stream_whose_first_token_misses_the_deadline_is_a_504(make_settings: Callable[..., Settings],
                                                                  fake_store: ChunkStore) -> None:
    fake, services = slow_server(make_settings(), fake_store)
    with live_server(services) as url:
        response = httpx.post(f"{url}/chat/stream", json=CHAT, headers={**ADMIN, "X-Request-Timeout": "3"},
                              timeout=60)
        assert response.status_code == 504 and response.json()["error"] == "timeout"
        wait_until(lambda: fake.active_generations == 0, 30, "the generation to stop")
        assert fake.cancelled == 1


@pytest.mark.parametrize(("headers", "body", "field"), [
    ({"X-Request-Timeout": "soon"}, {}, "X-Request-Timeout"),
    ({"X-Request-Timeout": "0"}, {}, "X-Request-Timeout"),
    ({"X-Request-Timeout": "nan"}, {}, "X-Request-Timeout"),
    ({"X-Request-Timeout": "601"}, {}, "X-Request-Timeout"),
    ({}, {"timeout_s": -1}, "timeout_s"),
    ({}, {"timeout_s": 601}, "timeout_s"),
])
def test_a_bad_timeout_is_a_422_naming_it(make_settings: Callable[..., Settings], fake_store: ChunkStore,
                                          headers: dict[str, str], body: dict[str, Any], field: str) -> None:
    fake, services = slow_server(make_settings(), fake_store, delay_s=0.0)
    with live_server(services) as url:
        response = httpx.post(f"{url}/query", json={**QUERY, **body}, headers={**ADMIN, **headers}, timeout=60)
        assert response.status_code == 422 and response.json()["field"] == field, response.text
        assert fake.calls == 0


def test_a_burst_that_times_out_leaves_the_model_idle(make_settings: Callable[..., Settings],
                                                      fake_store: ChunkStore) -> None:
    fake, services = slow_server(make_settings(), fake_store)
    with live_server(services) as url:
        def ask(_: int) -> httpx.Response:
            return httpx.post(f"{url}/query", json=QUERY, headers={**ADMIN, "X-Request-Timeout": "5"}, timeout=60)

        with ThreadPoolExecutor(5) as pool:
            statuses = [r.status_code for r in pool.map(ask, range(5))]
        assert statuses == [504] * 5
        wait_until(lambda: metric(url, "rag_llm_active_generations") == 0, 30, "no generation left running")
        started = len(fake.params)  # (on a very loaded machine retrieval alone may use up a deadline)
        assert started >= 1 and fake.cancelled == started and fake.active_generations == 0
        fake.delay_s = 0.0
        after = httpx.post(f"{url}/query", json=QUERY, headers=ADMIN, timeout=60)
        assert after.status_code == 200 and after.json()["answer"].startswith("echo:")


def test_no_fallback_outlives_the_request(make_settings: Callable[..., Settings], fake_store: ChunkStore) -> None:
    """The first provider holds the call past the deadline: the request ends then, and the fallback is never asked."""
    providers = [{"id": "fake:slow", "priority": 0, "options": {"delay_s": 120}}, {"id": "fake:spare", "priority": 1}]
    settings = make_settings(llm_providers_json=json.dumps(providers))
    services = compose(settings, store=fake_store)
    with live_server(services) as url:
        response = httpx.post(f"{url}/chat", json=CHAT, headers={**ADMIN, "X-Request-Timeout": "3"}, timeout=60)
        assert response.status_code == 504 and "waiting for fake:slow" in response.json()["message"]
    slow, spare = (services.llm.entry(i).backend for i in ("fake:slow", "fake:spare"))
    assert slow.cancelled == 1 and spare.calls == 0
    assert services.llm.entry("fake:slow").breaker.snapshot()["recent_failures"] == 0  # the deadline, not its fault


@pytest.mark.slow
def test_deadlines_through_serve(serve_app: Any) -> None:
    """The Serve app (router, LLM deployment over a handle): the header is checked, a deadline that passes is a 504
    and the app answers the next request."""
    url, headers = serve_app.url, serve_app.headers()
    bad = httpx.post(f"{url}/chat", json=CHAT, headers={**headers, "X-Request-Timeout": "later"}, timeout=60)
    assert bad.status_code == 422 and bad.json()["field"] == "X-Request-Timeout"
    spent = httpx.post(f"{url}/query", json=QUERY, headers={**headers, "X-Request-Timeout": "0.001"}, timeout=60)
    assert spent.status_code == 504 and "0.001s deadline" in spent.json()["message"]
    ok = httpx.post(f"{url}/chat", json=CHAT, headers={**headers, "X-Request-Timeout": "30"}, timeout=60)
    assert ok.status_code == 200 and ok.json()["answer"].startswith("echo:")
