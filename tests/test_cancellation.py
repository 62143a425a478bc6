"""Cancellation: a client that disconnects from a non-streaming generation route stops its generation; queued work
whose caller has gone never starts; Serve handle calls are cancelled with the task that awaits them."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from deployments.llm import HandleLLM, LLMDeployment, handle_llm
from rag_ray.config import Settings
from rag_ray.errors import ProviderTimeout
from rag_ray.llm.base import ChatMessage, GenerationParams
from rag_ray.llm.fake import FakeLLM
from rag_ray.llm.windows import CountsTokens, resolve_window
from rag_ray.providers.config import ProviderSpec
from rag_ray.store.milvus import ChunkStore
from tests.api_helpers import compose
from tests.job_helpers import wait_until
from tests.live_server import ADMIN, live_server

QUESTION = "what stops a generation?"
ROUTES: dict[str, dict[str, Any]] = {
    "/query": {"query": QUESTION, "mode": "rag", "max_tokens": 16},
    "/generate/single": {"query": QUESTION, "max_tokens": 16},
    "/chat": {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16},
    "/v1/chat/completions": {"model": "fake:echo", "messages": [{"role": "user", "content": QUESTION}]},
}


def post_and_keep(url: str, path: str, body: dict[str, Any]) -> socket.socket:
    """Send a request and return the open connection (closing it is the client going away)."""
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nAuthorization: {ADMIN['Authorization']}\r\n\r\n")
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80))
    sock.sendall(head.encode() + data)
    return sock


def serve(settings: Settings, store: ChunkStore, fake: FakeLLM) -> Any:
    return compose(settings.model_copy(update={"mask_pii": False}), store=store, engine=fake)


@pytest.mark.parametrize("path", list(ROUTES))
def test_a_client_that_leaves_stops_its_generation(make_settings: Callable[..., Settings], fake_store: ChunkStore,
                                                   path: str) -> None:
    fake = FakeLLM("echo", delay_s=120)
    with live_server(serve(make_settings(), fake_store, fake)) as url:
        client = post_and_keep(url, path, ROUTES[path])
        wait_until(lambda: fake.active_generations == 1, 60, "the generation to start")
        client.close()
        wait_until(lambda: fake.active_generations == 0, 30, "the generation to stop")
        assert fake.cancelled == 1
        fake.delay_s = 0.0
        assert httpx.post(f"{url}{path}", json=ROUTES[path], headers=ADMIN, timeout=60).status_code == 200


def test_queued_work_whose_caller_left_never_starts(make_settings: Callable[..., Settings],
                                                    fake_store: ChunkStore) -> None:
    """A model that serves one generation at a time (like the local one): the second caller leaves while it waits."""
    fake = FakeLLM("echo", delay_s=8, serialize=True)
    body = ROUTES["/chat"]
    with live_server(serve(make_settings(), fake_store, fake)) as url:
        first = post_and_keep(url, "/chat", body)
        wait_until(lambda: fake.active_generations == 1, 60, "the first generation to start")
        second = post_and_keep(url, "/chat", body)
        wait_until(lambda: fake.active_generations == 2, 60, "the second call to queue")
        second.close()
        wait_until(lambda: fake.cancelled == 1, 30, "the queued call to be dropped")
        first.settimeout(60)
        assert first.recv(4096).startswith(b"HTTP/1.1 200")
        first.close()
        assert fake.calls == 1  # only the first one ever generated


# ---- Serve handles ------------------------------------------------------------------------------------------------
class PendingResponse:
    """A ``DeploymentResponse`` that never finishes; records ``cancel``."""

    def __init__(self) -> None:
        self.cancelled = False
        self._never = asyncio.Event()

    def __await__(self) -> Any:
        return self._never.wait().__await__()

    def cancel(self) -> None:
        self.cancelled = True


class RecordingMethod:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.responses: list[PendingResponse] = []

    def remote(self, *args: Any) -> PendingResponse:
        self.calls.append(args)
        self.responses.append(PendingResponse())
        return self.responses[-1]


class PendingHandle:
    def __init__(self) -> None:
        self.generate = RecordingMethod()


def test_a_cancelled_handle_call_is_cancelled_in_serve() -> None:
    handle = PendingHandle()

    async def scenario() -> None:
        call = asyncio.ensure_future(HandleLLM(handle, "fake", "echo").generate(
            [ChatMessage("user", "hi")], GenerationParams(timeout_s=5.0)))
        while not handle.generate.calls:
            await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(scenario())
    [(_, params, sent_at)] = handle.generate.calls
    assert params.timeout_s == 5.0 and abs(sent_at - time.time()) < 60
    assert handle.generate.responses[0].cancelled


def test_a_deployment_does_not_start_a_call_queued_past_its_budget() -> None:
    deployment = LLMDeployment(ProviderSpec(id="fake:echo"))
    fake = deployment.llm
    assert isinstance(fake, FakeLLM)
    messages = [ChatMessage("user", "hi")]
    with pytest.raises(ProviderTimeout, match="not started"):
        asyncio.run(deployment.generate(messages, GenerationParams(timeout_s=1.0), time.time() - 5))
    assert fake.calls == 0
    fake.delay_s = 60
    with pytest.raises(ProviderTimeout, match="budget"):
        asyncio.run(deployment.generate(messages, GenerationParams(timeout_s=0.2), time.time()))
    assert fake.cancelled == 1 and fake.active_generations == 0
    fake.delay_s = 0
    done = asyncio.run(deployment.generate(messages, GenerationParams(timeout_s=30.0), time.time()))
    assert done.text.startswith("echo:") and 0 < (fake.params[-1].timeout_s or 0) <= 30.0


def test_a_handle_forwards_the_window_and_tokenizer_of_its_deployment() -> None:
    assert not isinstance(handle_llm(PendingHandle(), "openai", "gpt-4o", {"counts_tokens": False}), CountsTokens)
    local = handle_llm(PendingHandle(), "local", "SmolLM2", {"counts_tokens": True, "context_window": 1024})
    window = resolve_window("local:SmolLM2", local)
    assert window.tokens == 1024 and window.source == "adapter" and window.counted_with == "tokenizer"
