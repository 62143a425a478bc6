"""/v1 (OpenAI-compatible): the official openai client in-process and against Serve, error shapes, caps, rag."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.llm.fake import FakeLLM
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl
from tests import test_api_chat as shared
from tests.test_api_chat import AUTH, HI, BreaksAfter, parse_sse, seed_store

build_client = shared.build_client  # the fixtures, shared
api_settings = shared.api_settings
api_store = shared.api_store

DOCS = {"/docs/tea.txt": ("Green tea is brewed from Camellia sinensis leaves.", Acl("system", (), "public")),
        "/docs/volcano.txt": ("Volcanoes erupt molten lava and ash from the mantle.", Acl("system", (), "public")),
        "/docs/bob-tea.txt": ("Bob's secret green tea brewing notes.", Acl("u-bob", (), "private"))}


def client_for(test_client: TestClient, token: str = "admin-token") -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=token, http_client=test_client, max_retries=0)


@pytest.fixture
def oai(build_client: Callable[..., TestClient]) -> openai.OpenAI:
    return client_for(build_client())


# ------------------------------------------------------------------------------------------ chat completions
def test_chat_completion_shape(oai):
    completion = oai.chat.completions.create(model="fake:echo", messages=HI, temperature=0.2, max_tokens=50)
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    assert completion.model == "fake:echo" and completion.created > 0
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == "echo: hello there world"
    assert choice.finish_reason == "stop" and choice.index == 0
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        3, 4, 7)


def test_bare_model_id_and_content_parts(oai):
    completion = oai.chat.completions.create(model="echo", messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "parts "}, {"type": "text", "text": "joined"}]}])
    assert completion.choices[0].message.content == "echo: parts joined"


def test_streamed_chat_completion(oai):
    chunks = list(oai.chat.completions.create(model="fake:echo", messages=HI, stream=True,
                                              stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


def test_raw_stream_ends_with_done(build_client):
    r = build_client().post("/v1/chat/completions", headers=AUTH,
                            json={"model": "echo", "messages": HI, "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert parse_sse(r.text)[-1] == (None, "[DONE]")


def test_failure_mid_stream_raises_in_the_client(build_client):
    oai = client_for(build_client(BreaksAfter(2)))
    stream = oai.chat.completions.create(model="fake:echo", messages=HI, stream=True)
    with pytest.raises(openai.APIError, match="upstream died"):
        list(stream)


# -------------------------------------------------------------------------------------------------- errors
def test_errors_use_the_openai_shape(build_client):
    client = build_client()
    r = client.post("/v1/chat/completions", json={"model": "echo", "messages": HI})
    assert r.status_code == 401
    assert r.json() == {"error": {"message": "missing bearer token (Authorization: Bearer <token>)",
                                  "type": "authentication_error", "param": "Authorization",
                                  "code": "unauthenticated"}}
    r = client.post("/v1/chat/completions", headers=AUTH, json={"model": "gpt-4o", "messages": HI})
    assert r.status_code == 422 and r.json()["error"]["param"] == "model"
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = client.post("/v1/chat/completions", headers={**AUTH, "content-type": "application/json"}, content=b"{oops")
    assert r.status_code == 422 and r.json()["error"]["param"] == "body"
    assert r.json()["error"]["message"].startswith("body: invalid JSON at character 1: ")
    r = client.post("/chat", headers=AUTH, json={"messages": HI, "model": "gpt-4o"})  # other routes keep ours
    assert r.json()["error"] == "invalid_input" and r.json()["field"] == "model"


def test_unknown_model_in_the_client(oai):
    with pytest.raises(openai.UnprocessableEntityError) as info:
        oai.chat.completions.create(model="gpt-4o", messages=HI)
    assert info.value.body["param"] == "model"  # type: ignore[index]


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": HI * 257}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "x" * 100_001}]}, "messages"),
    ({"messages": HI, "max_tokens": 8193}, "max_tokens"),
    ({"messages": HI, "max_completion_tokens": 0}, "max_completion_tokens"),
    ({"messages": HI, "temperature": 2.5}, "temperature"),
    ({"messages": HI, "n": 2}, "n"),
    ({"messages": HI, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": HI, "tools": []}, "tools"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
])
def test_chat_caps_are_422_naming_the_param(build_client, body, param):
    r = build_client().post("/v1/chat/completions", headers=AUTH, json={"model": "echo", **body})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("body", "param"), [
    ({"input": ["x"] * 513}, "input"),
    ({"input": "x" * 32_001}, "input.0"),
    ({"input": [[1, 2, 3]]}, "input.0"),
    ({"input": "x", "dimensions": 8193}, "dimensions"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "model": "text-embedding-3-small"}, "model"),
])
def test_embedding_caps_are_422_naming_the_param(build_client, body, param):
    r = build_client().post("/v1/embeddings", headers=AUTH, json={"model": "fake:hash-bow", **body})
    assert r.status_code == 422 and r.json()["error"]["param"] == param, r.text


# ------------------------------------------------------------------------------------- embeddings, models
def test_embeddings_float_and_base64(oai):
    expected = FakeEmbedder().embed(["a b", "c d"])
    result = oai.embeddings.create(model="fake:hash-bow", input=["a b", "c d"])
    assert result.object == "list" and [d.index for d in result.data] == [0, 1]
    np.testing.assert_allclose(np.asarray([d.embedding for d in result.data]), expected, atol=1e-6)
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0
    encoded = oai.embeddings.create(model="hash-bow", input="a b", encoding_format="base64")
    row = np.frombuffer(base64.b64decode(encoded.data[0].embedding), dtype="<f4")  # type: ignore[arg-type]
    np.testing.assert_allclose(row, expected[0], atol=1e-6)
    with pytest.raises(openai.UnprocessableEntityError):  # hash-bow is not trained for shortened vectors
        oai.embeddings.create(model="hash-bow", input="a b", dimensions=8)


def test_models_list_and_retrieve(oai):
    ids = [m.id for m in oai.models.list()]
    assert ids == ["fake:echo", "rag", "fake:hash-bow"]
    assert oai.models.retrieve("rag").owned_by == "rag-ray"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("gpt-4o")


# ---------------------------------------------------------------------------------------------------- rag
def test_rag_model_answers_with_visible_sources_only(build_client, fake_store: ChunkStore):
    seed_store(fake_store, DOCS)
    oai = client_for(build_client(store=fake_store), token="alice-token")
    completion = oai.chat.completions.create(model="rag", messages=[{"role": "user", "content": "green tea brewed"}])
    body: dict[str, Any] = completion.model_dump()
    sources = [s["source"] for s in body["rag_sources"]]
    assert sources[0] == "/docs/tea.txt" and "/docs/bob-tea.txt" not in sources
    text = completion.choices[0].message.content or ""
    assert "Camellia sinensis" in text  # the echo LLM repeats the prompt, so the context reached it
    assert "\n\nSources:\n[1] /docs/tea.txt" in text and completion.model == "rag"


def test_rag_model_streams_sources_first(build_client, fake_store: ChunkStore):
    seed_store(fake_store, DOCS)
    oai = client_for(build_client(FakeLLM(responder=lambda m: "brewed from leaves [1]"), store=fake_store))
    chunks = list(oai.chat.completions.create(model="rag", stream=True,
                                              messages=[{"role": "user", "content": "green tea brewed"}]))
    first: dict[str, Any] = chunks[0].model_dump()
    assert first["rag_sources"][0]["source"] in ("/docs/tea.txt", "/docs/bob-tea.txt")  # admin sees all
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.startswith("brewed from leaves [1]\n\nSources:\n[1] /docs/")


def test_rag_needs_a_user_question(oai):
    with pytest.raises(openai.UnprocessableEntityError) as info:
        oai.chat.completions.create(model="rag", messages=[{"role": "system", "content": "hi"}])
    assert info.value.body["param"] == "messages"  # type: ignore[index]


# --------------------------------------------------------------------------------------- over real HTTP
def test_serve_with_the_official_client(serve_app):
    seed_store(ChunkStore.connect(serve_app.settings.milvus_address, serve_app.settings.collection, 64),
               {"/docs/oai-tea.txt": ("Oolong tea is partially oxidised before drying.", Acl("system", (), "public"))})
    oai = openai.OpenAI(base_url=serve_app.url + "/v1", api_key=serve_app.admin_token, max_retries=0, timeout=60)
    completion = oai.chat.completions.create(model="fake:echo", messages=HI)
    assert completion.choices[0].message.content == "echo: hello there world" and completion.usage.total_tokens
    chunks = list(oai.chat.completions.create(model="echo", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hello there world"
    embedded = oai.embeddings.create(model="fake:hash-bow", input=["oolong tea"])
    assert len(embedded.data[0].embedding) == 64
    assert {"fake:echo", "rag", "fake:hash-bow"} <= {m.id for m in oai.models.list()}
    rag = oai.chat.completions.create(model="rag", messages=[{"role": "user", "content": "how is oolong tea made"}])
    assert rag.model_dump()["rag_sources"][0]["source"] == "/docs/oai-tea.txt"
    assert "[1] /docs/oai-tea.txt" in (rag.choices[0].message.content or "")
