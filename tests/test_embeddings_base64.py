"""``encoding_format: "base64"`` on ``/embeddings`` (OpenAI's: the row's little-endian float32 bytes): the same vectors
as the float rows, refused values named, and the official ``openai`` client (which asks for base64 by default and
decodes it) working against both ``/embeddings`` and ``/v1/embeddings`` of the app from the composition root."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from rag_ray.api.app import create_app
from rag_ray.config import Settings
from rag_ray.embedding.fake import FakeEmbedder
from tests.api_helpers import compose

AUTH = {"Authorization": "Bearer admin-token"}
TEXTS = ["머신러닝이란 무엇인가?", "green tea leaves", "volcanic ash"]


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(embedding_cache_size=0)  # every row computed: nothing shared between the two calls
    with TestClient(create_app(compose(settings, embedder=FakeEmbedder()))) as test_client:
        yield test_client


def rows(body: dict, encoding: str) -> np.ndarray:  # type: ignore[type-arg]
    if encoding == "base64":
        return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]])
    return np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)


def test_base64_rows_are_the_float_rows(client):
    bodies = {encoding: client.post("/embeddings", headers=AUTH, json={"input": TEXTS, "encoding_format": encoding})
              for encoding in ("float", "base64")}
    assert all(r.status_code == 200 for r in bodies.values()), {k: r.text for k, r in bodies.items()}
    as_float, as_base64 = (rows(bodies[e].json(), e) for e in ("float", "base64"))
    assert as_float.shape == (3, FakeEmbedder().dimension)
    np.testing.assert_array_equal(as_float, as_base64)  # float32 rows written exactly both ways
    assert isinstance(bodies["base64"].json()["data"][0]["embedding"], str)
    plain = client.post("/embeddings", headers=AUTH, json={"input": TEXTS}).json()  # default: float
    np.testing.assert_array_equal(rows(plain, "float"), as_float)


@pytest.mark.parametrize("value", ["int8", "", 1, None])
def test_unknown_encoding_is_422_naming_it(client, value):
    r = client.post("/embeddings", headers=AUTH, json={"input": ["x"], "encoding_format": value})
    assert r.status_code == 422 and r.json()["field"] == "encoding_format", r.text


@pytest.mark.parametrize("base_url", ["http://testserver", "http://testserver/v1"])
def test_the_official_openai_client(client, base_url):
    """The client sends ``encoding_format: base64`` unless told otherwise and decodes it itself."""
    oai = openai.OpenAI(base_url=base_url, api_key="admin-token", http_client=client, max_retries=0)
    expected = rows(client.post("/embeddings", headers=AUTH, json={"input": TEXTS}).json(), "float")
    default = oai.embeddings.create(model="hash-bow", input=TEXTS)
    as_float = oai.embeddings.create(model="hash-bow", input=TEXTS, encoding_format="float")
    for result in (default, as_float):
        np.testing.assert_allclose(np.asarray([d.embedding for d in result.data], dtype=np.float32), expected,
                                   rtol=0, atol=0)
