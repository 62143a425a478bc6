"""/chat and /chat/stream: in-process (fake LLMs behind a real LLMManager) and over HTTP against Serve.

The helpers here (services builder, SSE parser, ASGI driver) are shared with the other API test modules.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from rag_ray.api.app import create_app
from rag_ray.api.services import Services
from rag_ray.config import Settings
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.errors import ProviderAuthError, ProviderServerError
from rag_ray.llm.base import ChatMessage, GenerationParams, StreamChunk
from rag_ray.llm.fake import FakeLLM
from rag_ray.providers.manager import LLMEntry, LLMManager
from rag_ray.providers.retry import RetryPolicy
from rag_ray.store.milvus import ChunkStore
from rag_ray.testing.auth import StaticAuthenticator
from rag_ray.types import Acl, Chunk, Principal
from tests.api_helpers import compose

ADMIN = Principal("u-admin", "admin", role="admin")
ALICE = Principal("u-alice", "alice")
TOKENS = {"admin-token": ADMIN, "alice-token": ALICE}
AUTH = {"Authorization": "Bearer admin-token"}
HI = [{"role": "user", "content": "hello there world"}]


# ------------------------------------------------------------------------------------------ shared helpers
def manager_of(*llms: Any, priorities: Sequence[int] = ()) -> LLMManager:
    entries = [LLMEntry.of(llm, priority=priorities[i] if priorities else 0) for i, llm in enumerate(llms)]
    return LLMManager(entries, policy=RetryPolicy(max_retries=0))


def make_services(settings: Settings, store: ChunkStore, manager: LLMManager) -> Services:
    return compose(settings, auth=StaticAuthenticator(TOKENS), llm=manager, store=store)


@pytest.fixture(scope="session")
def api_settings(milvus_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("api"), milvus_uri=milvus_uri,  # type: ignore[call-arg]
                    collection=f"api_{uuid.uuid4().hex[:8]}", embedding_provider="fake", embedding_model="hash-bow",
                    llm_provider="fake", llm_model="echo", app_env="test", secret_key="api-test-secret-" + "z" * 40)


@pytest.fixture(scope="session")
def api_store(api_settings: Settings) -> Iterator[ChunkStore]:
    """One empty collection for the tests that never search (a fresh one per test costs a second)."""
    store = ChunkStore.connect(api_settings.milvus_uri, api_settings.collection, 64)
    yield store
    store.drop()


@pytest.fixture
def build_client(api_settings: Settings, api_store: ChunkStore) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def build(*llms: Any, manager: LLMManager | None = None, store: ChunkStore | None = None) -> TestClient:
        services = make_services(api_settings, store or api_store, manager or manager_of(*(llms or (FakeLLM(),))))
        clients.append(TestClient(create_app(services)))
        return clients[-1]

    yield build
    for client in clients:
        client.close()


def seed_store(store: ChunkStore, docs: dict[str, tuple[str, Acl]]) -> None:
    """Chunks whose source is the key, text and ACL the value; vectors from the fake embedder (64-d)."""
    chunks = [Chunk(f"c{i}", f"d{i}", source, 0, text, f"h{i}", {"file_type": "txt"}, acl)
              for i, (source, (text, acl)) in enumerate(docs.items())]
    store.upsert(chunks, np.asarray(FakeEmbedder().embed([c.text for c in chunks])))


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """(event, data) per frame."""
    frames = []
    for block in text.strip().split("\n\n"):
        event, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            frames.append((event, "\n".join(data)))
    return frames


def events(text: str) -> list[tuple[str | None, Any]]:
    return [(event, json.loads(data)) for event, data in parse_sse(text)]


class BreaksAfter(FakeLLM):
    """Streams ``good`` tokens, then fails (a provider dying mid-answer)."""

    def __init__(self, good: int, **kw: Any):
        super().__init__(**kw)
        self.good = good

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        for i in range(self.good):
            yield StreamChunk(delta=f"t{i} ")
        raise ProviderServerError("upstream died", provider=self.provider)


class Tracked(FakeLLM):
    """A slow streamer that records how many tokens it produced and whether it was closed."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.emitted = 0
        self.closed = asyncio.Event()

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        try:
            async for chunk in super().stream(messages, params):
                self.emitted += 1
                yield chunk
        finally:
            self.closed.set()


# ------------------------------------------------------------------------------------------------ /chat
def test_chat_answers_with_provider_usage_and_cost(build_client):
    r = build_client().post("/chat", headers=AUTH, json={"messages": HI, "temperature": 0.2, "max_tokens": 50})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "echo: hello there world"
    assert (body["provider"], body["model"], body["finish_reason"]) == ("fake", "echo", "stop")
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert body["cost_usd"] == 0.0 and body["latency_ms"] >= 0


def test_chat_routes_by_model_provider_and_strategy(build_client):
    a = FakeLLM("alpha", provider="fake", responder=lambda m: "from alpha")
    b = FakeLLM("beta", provider="other", responder=lambda m: "from beta")
    client = build_client(a, b)

    def ask(**extra: Any) -> dict[str, Any]:
        r = client.post("/chat", headers=AUTH, json={"messages": HI, **extra})
        assert r.status_code == 200, r.text
        return r.json()

    assert ask(model="beta")["answer"] == "from beta"
    assert ask(model="other:beta")["model"] == "beta"
    assert ask(provider="fake")["answer"] == "from alpha"
    assert ask(provider="fake:alpha", model="alpha")["provider"] == "fake"
    assert ask(load_balancing="health_based")["provider"] in ("fake", "other")
    assert ask(load_balancing="weighted", model="alpha")["answer"] == "from alpha"  # seed alias of random


@pytest.mark.parametrize(("extra", "field"), [
    ({"model": "gpt-4"}, "model"),
    ({"provider": "openai"}, "provider"),
    ({"provider": "fake", "model": "nope"}, "model"),
    ({"load_balancing": "fastest"}, "load_balancing"),
])
def test_unknown_target_is_422_naming_the_field(build_client, extra, field):
    r = build_client().post("/chat", headers=AUTH, json={"messages": HI, **extra})
    assert r.status_code == 422 and r.json()["field"] == field, r.text


@pytest.mark.parametrize(("body", "field"), [
    ({"messages": []}, "messages"),
    ({"messages": HI * 257}, "messages"),
    ({"messages": [{"role": "user", "content": "x" * 60_000}] * 2}, "messages"),
    ({"messages": [{"role": "user", "content": "x" * 100_001}]}, "messages.0.content"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "x", "extra": 1}]}, "messages.0.extra"),
    ({"messages": HI, "max_tokens": 0}, "max_tokens"),
    ({"messages": HI, "max_tokens": 8193}, "max_tokens"),
    ({"messages": HI, "temperature": 2.01}, "temperature"),
    ({"messages": HI, "temperature": -0.1}, "temperature"),
    ({"messages": HI, "top_k": 3}, "top_k"),
])
def test_caps_are_422_naming_the_field(build_client, body, field):
    for path in ("/chat", "/chat/stream"):
        r = build_client().post(path, headers=AUTH, json=body)
        assert r.status_code == 422 and r.json()["field"] == field, (path, r.text)


def test_every_chat_route_needs_a_token(build_client):
    client = build_client()
    for path in ("/chat", "/chat/stream"):
        assert client.post(path, json={"messages": HI}).status_code == 401
        assert client.post(path, json={"messages": HI}, headers={"Authorization": "Bearer nope"}).status_code == 401


# ------------------------------------------------------------------------------------------ /chat/stream
def test_stream_tokens_then_done(build_client):
    r = build_client().post("/chat/stream", headers=AUTH, json={"messages": HI, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    frames = events(r.text)
    tokens = [data["delta"] for event, data in frames if event == "token"]
    assert "".join(tokens) == "echo: hello there world" and len(tokens) == 4
    event, done = frames[-1]
    assert event == "done" and (done["provider"], done["model"], done["finish_reason"]) == ("fake", "echo", "stop")
    assert done["usage"]["completion_tokens"] == 4 and done["latency_ms"] >= 0 and done["cost_usd"] == 0.0


def test_chat_with_stream_flag_streams(build_client):
    r = build_client().post("/chat", headers=AUTH, json={"messages": HI, "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream") and events(r.text)[-1][0] == "done"


def test_stream_fails_over_before_the_first_token(build_client):
    broken = FakeLLM("broken", provider="down", fail_with=ProviderAuthError("bad key", provider="down"))
    spare = FakeLLM("spare", provider="fake")
    client = build_client(manager=manager_of(broken, spare, priorities=(0, 1)))
    frames = events(client.post("/chat/stream", headers=AUTH, json={"messages": HI}).text)
    assert frames[-1][0] == "done" and frames[-1][1]["provider"] == "fake" and frames[-1][1]["model"] == "spare"
    assert broken.calls == 1


def test_stream_with_no_provider_left_is_an_http_error(build_client):
    broken = FakeLLM(fail_with=ProviderAuthError("bad key", provider="fake"))
    r = build_client(broken).post("/chat/stream", headers=AUTH, json={"messages": HI})
    assert r.status_code == 503 and r.json()["error"] == "provider_unavailable"


def test_failure_after_the_first_token_is_an_error_event(build_client):
    r = build_client(BreaksAfter(2)).post("/chat/stream", headers=AUTH, json={"messages": HI})
    frames = events(r.text)
    assert [e for e, _ in frames] == ["token", "token", "error"]
    assert frames[-1][1] == {"error": "provider_server_error", "message": "upstream died"}


async def _drive_until_disconnect(app: Any, body: dict[str, Any], tokens_before_leaving: int) -> list[bytes]:
    """Run the ASGI app like a server whose client hangs up after a few token frames."""
    gone = asyncio.Event()
    sent: list[bytes] = []
    request = {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return request
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            sent.append(message["body"])
            if sum(b.count(b"event: token") for b in sent) >= tokens_before_leaving:
                gone.set()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "POST", "path": "/chat/stream", "raw_path": b"/chat/stream", "query_string": b"",
             "root_path": "", "scheme": "http", "server": ("test", 80), "client": ("127.0.0.1", 1234),
             "headers": [(b"authorization", b"Bearer admin-token"), (b"content-type", b"application/json")]}
    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    return sent


def test_client_disconnect_cancels_upstream_generation(api_settings, api_store):
    slow = Tracked(responder=lambda m: " ".join(f"w{i}" for i in range(200)), token_delay_s=0.01)
    app = create_app(make_services(api_settings, api_store, manager_of(slow)))

    async def scenario() -> list[bytes]:
        sent = await _drive_until_disconnect(app, {"messages": HI, "max_tokens": 500}, tokens_before_leaving=3)
        await asyncio.wait_for(slow.closed.wait(), timeout=10)  # upstream closed, not left running
        return sent

    sent = asyncio.run(scenario())
    assert slow.emitted < 50
    assert not any(b"event: done" in b for b in sent)


# --------------------------------------------------------------------------------------- over real HTTP
def test_serve_chat(serve_app):
    r = httpx.post(f"{serve_app.url}/chat", headers=serve_app.headers(), timeout=60,
                   json={"messages": HI, "model": "echo", "temperature": 0.7, "max_tokens": 1000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "echo: hello there world" and (body["provider"], body["model"]) == ("fake", "echo")
    r = httpx.post(f"{serve_app.url}/chat", headers=serve_app.headers(), json={"messages": HI, "model": "gpt-4"},
                   timeout=60)
    assert r.status_code == 422 and r.json()["field"] == "model"


def test_serve_chat_stream(serve_app):
    with httpx.stream("POST", f"{serve_app.url}/chat/stream", headers=serve_app.headers(), timeout=60,
                      json={"messages": HI, "stream": True, "load_balancing": "health_based"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        frames = events(r.read().decode())
    assert "".join(d["delta"] for e, d in frames if e == "token") == "echo: hello there world"
    assert frames[-1][0] == "done" and frames[-1][1]["provider"] == "fake" and frames[-1][1]["usage"]
