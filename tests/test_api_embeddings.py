"""/embeddings: the default embedder and the embedding manager, dimensions and normalisation, caps, over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.providers.manager import EmbedderEntry, EmbeddingManager
from rag_ray.providers.retry import RetryPolicy
from tests import test_api_chat as shared
from tests.test_api_chat import AUTH

build_client = shared.build_client  # the fixtures, shared
api_settings = shared.api_settings
api_store = shared.api_store

TEXTS = ["머신러닝이란 무엇인가?", "딥러닝과 머신러닝의 차이점"]


def post(client: Any, **body: Any) -> Any:
    return client.post("/embeddings", headers=AUTH, json=body)


def vectors(body: dict[str, Any]) -> np.ndarray:
    assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    return np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)


def test_default_embedder_batch(build_client):
    r = post(build_client(), input=TEXTS, normalize=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["provider"], body["model"], body["dimensions"]) == ("fake", "hash-bow", 64)
    np.testing.assert_allclose(vectors(body), FakeEmbedder().embed(TEXTS), atol=1e-6)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0 and body["cost_usd"] == 0.0


def test_single_string_and_full_model_id(build_client):
    body = post(build_client(), input="자연어 처리 기술 설명", model="fake:hash-bow", provider="fake").json()
    assert vectors(body).shape == (1, 64)


def test_dimensions_truncate_and_renormalise(build_client):
    client = build_client()
    full = vectors(post(client, input=TEXTS).json())
    short = post(client, input=TEXTS, dimensions=16).json()
    assert short["dimensions"] == 16
    np.testing.assert_allclose(np.linalg.norm(vectors(short), axis=1), 1.0, atol=1e-5)
    raw = vectors(post(client, input=TEXTS, dimensions=16, normalize=False).json())
    np.testing.assert_allclose(raw, full[:, :16], atol=1e-6)


@pytest.mark.parametrize(("body", "field"), [
    ({"input": []}, "input"),
    ({"input": ["x"] * 513}, "input"),
    ({"input": ["ok", "x" * 32_001]}, "input.1"),
    ({"input": [""]}, "input.0"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "dimensions": 8193}, "dimensions"),
    ({"input": "x", "dimensions": 65}, "dimensions"),  # larger than the model
    ({"input": "x", "model": "text-embedding-3-large"}, "model"),
    ({"input": "x", "provider": "ollama"}, "provider"),
    ({"input": "x", "load_balancing": "fastest"}, "load_balancing"),
    ({"input": "x", "encoding": "base64"}, "encoding"),
])
def test_caps_and_unknown_targets_are_422_naming_the_field(build_client, body, field):
    r = post(build_client(), **body)
    assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_needs_a_token(build_client):
    assert build_client().post("/embeddings", json={"input": ["x"]}).status_code == 401


def _manager() -> EmbeddingManager:
    entries = [EmbedderEntry.of(FakeEmbedder("small"), priority=0), EmbedderEntry.of(FakeEmbedder("large"),
                                                                                     priority=1)]
    return EmbeddingManager(entries, policy=RetryPolicy(max_retries=0))


def test_embedding_manager_when_configured(build_client):
    manager = _manager()
    client = build_client(features={"embedding_manager": manager})
    body = post(client, input=TEXTS, load_balancing="cost_optimized").json()
    assert (body["provider"], body["model"], body["dimensions"]) == ("fake", "small", 64)
    body = post(client, input=TEXTS, model="large", dimensions=32).json()
    assert (body["model"], body["dimensions"]) == ("large", 32)
    assert manager.entries[1].calls == 1  # the large entry served the second call
    r = post(client, input=TEXTS, model="hash-bow")  # the default embedder is not an entry of the manager
    assert r.status_code == 422 and r.json()["field"] == "model"


def test_serve_embeddings(serve_app):
    r = httpx.post(f"{serve_app.url}/embeddings", headers=serve_app.headers(), timeout=60,
                   json={"input": TEXTS, "dimensions": 32, "normalize": True, "load_balancing": "cost_optimized"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["provider"], body["model"], body["dimensions"]) == ("fake", "hash-bow", 32)
    np.testing.assert_allclose(np.linalg.norm(vectors(body), axis=1), 1.0, atol=1e-5)
    r = httpx.post(f"{serve_app.url}/embeddings", headers=serve_app.headers(), json={"input": ["x"] * 513},
                   timeout=60)
    assert r.status_code == 422 and r.json()["field"] == "input"
