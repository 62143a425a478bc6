"""/embeddings and /v1/embeddings over HTTP (the in-process app from the production composition root): the seed's
three requests with a local, an OpenAI-protocol and an Ollama embedder configured (real SDKs against the fake
servers), refusals naming the field, the cache, the official openai client, /v1/models; and Serve."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from rag_ray.api.app import create_app
from rag_ray.config import Settings
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.store.milvus import ChunkStore
from rag_ray.testing.fake_servers import FakeOllamaServer, FakeOpenAIServer
from tests.api_helpers import compose

AUTH = {"Authorization": "Bearer admin-token"}
LOCAL = "local:all-MiniLM-L6-v2"
# the seed's README (임베딩 생성 / Ollama 로컬 임베딩 생성 / 다중 임베딩 프로바이더 사용), verbatim
SEED_OPENAI = {"input": ["머신러닝이란 무엇인가?", "딥러닝과 머신러닝의 차이점"], "model": "text-embedding-3-large",
               "dimensions": 1024, "normalize": True}
SEED_OLLAMA = {"input": ["자연어 처리 기술 설명"], "provider": "ollama", "model": "nomic-embed-text", "normalize": True}
SEED_MULTI = {"input": ["자연어 처리 기술의 발전"], "load_balancing": "cost_optimized", "dimensions": 512,
              "normalize": True}


@pytest.fixture
def servers() -> Iterator[tuple[FakeOpenAIServer, FakeOllamaServer]]:
    with FakeOpenAIServer(dimensions=3072) as oai, FakeOllamaServer(dimensions=768) as ollama:
        yield oai, ollama  # type: ignore[misc]


@pytest.fixture(scope="module")
def store_384(milvus_uri: str) -> Iterator[ChunkStore]:
    store = ChunkStore.connect(milvus_uri, f"emb_{uuid.uuid4().hex[:8]}", 384, embedding_model=LOCAL)
    yield store
    store.drop()


@pytest.fixture
def rig(make_settings: Callable[..., Settings], store_384: ChunkStore, servers
        ) -> Iterator[tuple[TestClient, FakeEmbedder]]:
    """The app with the seed's embedders: the collection's local MiniLM (a fake stand-in, 384-d), OpenAI's
    text-embedding-3-large and Ollama's nomic-embed-text behind the fake servers."""
    oai, ollama = servers
    providers = [{"id": LOCAL},
                 {"id": "openai:text-embedding-3-large", "api_key": "sk-test", "base_url": oai.base_url},
                 {"id": "ollama:nomic-embed-text", "base_url": ollama.url}]
    settings = make_settings(embedding_provider="local", embedding_model="all-MiniLM-L6-v2", llm_max_retries=0,
                             embedding_providers_json=json.dumps(providers))
    collection = FakeEmbedder("all-MiniLM-L6-v2", 384, provider="local")
    with TestClient(create_app(compose(settings, embedder=collection, store=store_384))) as client:
        yield client, collection


def post(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/embeddings", headers=AUTH, json=body)


def vectors(body: dict[str, Any]) -> np.ndarray:
    assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    return np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)


def served(body: dict[str, Any]) -> tuple[str, str, int]:
    return body["provider"], body["model"], body["dimensions"]


# ---------------------------------------------------------------------------------------------- the seed's
def test_the_seeds_three_requests(rig, servers):
    client, collection = rig
    oai, ollama = servers
    r = post(client, SEED_OPENAI)
    assert r.status_code == 200, r.text
    assert served(r.json()) == ("openai", "text-embedding-3-large", 1024) and vectors(r.json()).shape == (2, 1024)
    assert oai.last("/embeddings").body["dimensions"] == 1024 and r.json()["cost_usd"] > 0

    r = post(client, SEED_OLLAMA)
    assert r.status_code == 200, r.text
    assert served(r.json()) == ("ollama", "nomic-embed-text", 768)

    r = post(client, SEED_MULTI)
    assert r.status_code == 200, r.text
    assert served(r.json()) == ("ollama", "nomic-embed-text", 512)  # cheapest of those that can shorten to 512
    np.testing.assert_allclose(np.linalg.norm(vectors(r.json()), axis=1), 1.0, atol=1e-5)
    assert (oai.count("/embeddings"), ollama.count("/api/embed"), collection.calls) == (1, 2, 0)


def test_the_collection_model_answers_from_the_collection_embedder(rig):
    client, collection = rig
    r = post(client, {"input": "자연어 처리", "provider": "local"})
    assert r.status_code == 200, r.text
    assert served(r.json()) == ("local", "all-MiniLM-L6-v2", 384) and collection.calls == 1
    np.testing.assert_allclose(vectors(r.json()), collection.embed(["자연어 처리"]), atol=1e-6)


def test_a_repeat_is_answered_from_the_cache(rig, servers):
    client, _ = rig
    first = post(client, SEED_OLLAMA).json()
    again = post(client, SEED_OLLAMA).json()
    assert (first["cached"], again["cached"], servers[1].count("/api/embed")) == (0, 1, 1)
    np.testing.assert_allclose(vectors(again), vectors(first))
    assert again["usage"]["prompt_tokens"] == first["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize(("body", "field"), [
    ({"input": []}, "input"),
    ({"input": ["x"] * 513}, "input"),
    ({"input": ["ok", "x" * 32_001]}, "input.1"),
    ({"input": [""]}, "input.0"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "dimensions": 8193}, "dimensions"),
    ({"input": "x", "model": "all-MiniLM-L6-v2", "dimensions": 128}, "dimensions"),  # not a Matryoshka model
    ({"input": "x", "provider": "ollama", "dimensions": 769}, "dimensions"),  # larger than the model
    ({"input": "x", "model": "text-embedding-3-small"}, "model"),
    ({"input": "x", "provider": "google"}, "provider"),
    ({"input": "x", "load_balancing": "fastest"}, "load_balancing"),
    ({"input": "x", "encoding": "base64"}, "encoding"),
])
def test_refusals_are_422_naming_the_field(rig, body, field):
    r = post(rig[0], body)
    assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_needs_a_token(rig):
    assert rig[0].post("/embeddings", json={"input": ["x"]}).status_code == 401


# ------------------------------------------------------------------------------------------ OpenAI-compatible
def test_v1_embeddings_with_the_official_client(rig, servers):
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key="admin-token", http_client=rig[0], max_retries=0)
    encoded = oai.embeddings.create(model="text-embedding-3-large", input="머신러닝", dimensions=256,
                                    encoding_format="base64")
    row = np.frombuffer(base64.b64decode(encoded.data[0].embedding), dtype="<f4")  # type: ignore[arg-type]
    assert row.shape == (256,) and abs(float(np.linalg.norm(row)) - 1.0) < 1e-5
    assert servers[0].last("/embeddings").body["dimensions"] == 256
    result = oai.embeddings.create(model="ollama:nomic-embed-text", input=["a b", "c d"])
    assert [len(d.embedding) for d in result.data] == [768, 768] and result.usage.total_tokens > 0
    with pytest.raises(openai.UnprocessableEntityError) as info:
        oai.embeddings.create(model="text-embedding-3-small", input="x")
    assert info.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.UnprocessableEntityError) as info:
        oai.embeddings.create(model=LOCAL, input="x", dimensions=64)
    assert info.value.body["param"] == "dimensions"  # type: ignore[index]


def test_v1_models_lists_the_configured_embedders(rig):
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key="admin-token", http_client=rig[0], max_retries=0)
    ids = [m.id for m in oai.models.list()]
    assert ids[-3:] == [LOCAL, "openai:text-embedding-3-large", "ollama:nomic-embed-text"]
    assert oai.models.retrieve("ollama:nomic-embed-text").owned_by == "ollama"


# -------------------------------------------------------------------------------------------------- Serve
def test_serve_embeddings(serve_app):
    r = httpx.post(f"{serve_app.url}/embeddings", headers=serve_app.headers(), timeout=60,
                   json={"input": ["머신러닝이란 무엇인가?"], "normalize": True, "load_balancing": "cost_optimized"})
    assert r.status_code == 200, r.text
    assert served(r.json()) == ("fake", "hash-bow", 64)
    np.testing.assert_allclose(np.linalg.norm(vectors(r.json()), axis=1), 1.0, atol=1e-5)
    r = httpx.post(f"{serve_app.url}/embeddings", headers=serve_app.headers(), timeout=60,
                   json={"input": ["x"], "dimensions": 32})
    assert r.status_code == 422 and r.json()["field"] == "dimensions"  # hash-bow cannot shorten its vectors
