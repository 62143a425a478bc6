"""Every provider through its real SDK against the protocol-faithful fake servers (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rag_ray.errors import (
    ContextTooLong,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderRateLimited,
    ProviderServerError,
)
from rag_ray.llm import LLMS, load_providers
from rag_ray.llm.base import GenerationParams, StreamChunk, as_messages
from rag_ray.testing import (
    FakeAnthropicServer,
    FakeGeminiServer,
    FakeModelServer,
    FakeOllamaServer,
    FakeOpenAIServer,
)

load_providers()

SERVERS: dict[str, Callable[[], FakeModelServer]] = {
    "openai": FakeOpenAIServer, "anthropic": FakeAnthropicServer, "google": FakeGeminiServer,
    "ollama": FakeOllamaServer,
}
CHAT_PATH = {"openai": "/chat/completions", "anthropic": "/v1/messages", "google": "models/",
             "ollama": "/api/chat"}
MESSAGES = as_messages("what is ray", system="answer briefly")
PARAMS = GenerationParams(temperature=0.1, max_tokens=32)


@pytest.fixture(params=sorted(SERVERS))
def provider(request: pytest.FixtureRequest) -> Any:
    name = request.param
    with SERVERS[name]() as server:
        base_url = server.url if name == "ollama" else server.base_url
        yield name, server, lambda: LLMS.create(name, "m1", api_key="test-key", base_url=base_url)


def test_generate_returns_text_usage_and_finish(provider: Any) -> None:
    name, server, make = provider
    completion = asyncio.run(make().generate(MESSAGES, PARAMS))
    assert completion.text == server.text
    assert completion.provider == name and completion.model == "m1"
    assert completion.usage.completion_tokens == len(server.tokens())
    assert completion.usage.prompt_tokens > 0
    assert completion.finish_reason == "stop"
    assert server.count(CHAT_PATH[name]) == 1


def test_system_message_and_params_reach_the_server(provider: Any) -> None:
    name, server, make = provider
    asyncio.run(make().generate(MESSAGES, PARAMS))
    body = str(server.last(CHAT_PATH[name]).body)
    assert "answer briefly" in body and "what is ray" in body
    assert "32" in body  # max_tokens / num_predict / max_output_tokens / maxOutputTokens


def test_stream_yields_deltas_then_final_chunk_with_usage(provider: Any) -> None:
    _, server, make = provider

    async def collect() -> list[StreamChunk]:
        return [chunk async for chunk in make().stream(MESSAGES, PARAMS)]

    chunks = asyncio.run(collect())
    assert "".join(c.delta for c in chunks) == server.text
    final = chunks[-1]
    assert final.finish_reason == "stop" and final.usage is not None
    assert final.usage.completion_tokens == len(server.tokens())
    assert all(c.finish_reason is None for c in chunks[:-1])


@pytest.mark.parametrize(("status", "error", "retry_after"), [
    (429, ProviderRateLimited, 7.0), (500, ProviderServerError, None), (503, ProviderServerError, None),
    (401, ProviderAuthError, None)])
def test_errors_are_mapped_and_sdk_does_not_retry(provider: Any, status: int, error: type, retry_after: Any) -> None:
    name, server, make = provider
    server.fail(1, status, retry_after=retry_after, message="boom")
    with pytest.raises(error) as info:
        asyncio.run(make().generate(MESSAGES, PARAMS))
    assert server.count(CHAT_PATH[name]) == 1  # no nested SDK retries
    if retry_after is not None and name != "ollama":  # ollama's SDK drops response headers
        assert info.value.retry_after == pytest.approx(retry_after)


def test_context_window_error_is_context_too_long(provider: Any) -> None:
    _, server, make = provider
    server.fail_context()
    with pytest.raises(ContextTooLong):
        asyncio.run(make().generate(MESSAGES, PARAMS))


def test_stream_cut_mid_way_raises_connection_error(provider: Any) -> None:
    _, server, make = provider
    server.cut_after = 2
    seen: list[str] = []

    async def consume() -> None:
        async for chunk in make().stream(MESSAGES, PARAMS):
            seen.append(chunk.delta)

    with pytest.raises(ProviderConnectionError):
        asyncio.run(consume())
    assert "".join(seen) == "".join(server.tokens()[:2])


def test_connection_refused_is_connection_error() -> None:
    server = FakeOpenAIServer().start()
    url = server.base_url
    server.stop()
    llm = LLMS.create("openai", "m1", api_key="k", base_url=url)
    with pytest.raises(ProviderConnectionError):
        asyncio.run(llm.generate(MESSAGES, PARAMS))


def test_openai_base_url_env_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        llm = LLMS.create("openai", "gpt-4o-mini", api_key="k", base_url=None)
        completion = asyncio.run(llm.generate(MESSAGES, PARAMS))
        assert completion.text == server.text
        assert server.count("/chat/completions") == 1


def test_openai_retry_after_ms_header_is_parsed() -> None:
    with FakeOpenAIServer() as server:
        server.fail(1, 429, headers={"retry-after-ms": "250"})
        llm = LLMS.create("openai", "m", api_key="k", base_url=server.base_url)
        with pytest.raises(ProviderRateLimited) as info:
            asyncio.run(llm.generate(MESSAGES, PARAMS))
        assert info.value.retry_after == pytest.approx(0.25)


def test_gemini_retry_info_in_body_becomes_retry_after() -> None:
    from rag_ray.llm.google import google_status

    class FakeError(Exception):
        pass

    from google.genai import errors

    err = errors.ClientError(429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
                                             "details": [{"@type": "RetryInfo", "retryDelay": "3s"}]}})
    info = google_status(err)
    assert info is not None and info[0] == 429 and info[2] == {"retry-after": "3"}
    assert google_status(FakeError()) is None


# ---- embedders ----
EMBED_PATH = {"openai": "/embeddings", "google": "batchEmbedContents", "ollama": "/api/embed"}


@pytest.mark.parametrize("name", sorted(EMBED_PATH))
def test_embedders_return_normalised_vectors_with_dimensions(name: str) -> None:
    from rag_ray.embedding import EMBEDDERS
    from rag_ray.embedding import load_providers as load_embedders

    load_embedders()
    with SERVERS[name](dimensions=16) as server:
        base_url = server.url if name == "ollama" else server.base_url
        embedder = EMBEDDERS.create(name, "emb", api_key="k", base_url=base_url, dimensions=8, batch_size=2)
        vectors = embedder.embed(["alpha", "beta", "gamma"], input_type="query")
        assert vectors.shape == (3, 8) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
        assert embedder.dimension == 8
        assert server.count(EMBED_PATH[name]) == 2  # batches of 2
        again = embedder.embed(["alpha"])
        np.testing.assert_allclose(again[0], vectors[0], rtol=1e-5)


def test_openai_embedder_sends_dimensions_param_and_maps_errors() -> None:
    from rag_ray.embedding.openai import OpenAIEmbedder

    with FakeOpenAIServer() as server:
        embedder = OpenAIEmbedder("text-embedding-3-small", api_key="k", base_url=server.base_url, dimensions=4)
        assert embedder.embed(["x"]).shape == (1, 4)
        assert server.last("/embeddings").body["dimensions"] == 4
        server.fail(1, 429, retry_after=1)
        with pytest.raises(ProviderRateLimited):
            embedder.embed(["y"])
        assert server.count("/embeddings") == 2


def test_openai_list_models_route() -> None:
    import openai

    with FakeOpenAIServer(models=("a", "b")) as server:
        client = openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0)
        assert [m.id for m in client.models.list()] == ["a", "b"]
