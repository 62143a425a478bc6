"""One RAG pipeline over HTTP: ``/query`` (mode rag), ``/generate/rag`` (single and ensemble) and ``/v1`` ``model:
"rag"`` (streamed and not), in-process over Milvus Lite, against fake LLMs that enforce a small window the way the
local model does (and count more tokens than the server's estimate). Every route answers 2xx for ``k`` up to 20
over long passages, says which passages it used and dropped, and retrieves the same passages for the same question."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from rag_ray.api.app import create_app
from rag_ray.api.services import Services
from rag_ray.config import Settings
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.generation.rag import RagPipeline
from rag_ray.llm.fake import FakeLLM
from rag_ray.providers.manager import LLMEntry, LLMManager
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Chunk
from tests.api_helpers import compose
from tests.test_generation_service import SEED_RAG

QUESTION = "What does the handbook say about presets?"
WINDOW = 1024
PASSAGE = ("The handbook says presets store the export settings of a project: the file format, the resolution, the "
           "colour profile and the naming scheme, so a whole team exports the same way with one click. ") * 8
ADMIN = {"Authorization": "Bearer admin-token"}


def small_llm(model: str = "echo") -> FakeLLM:
    """Refuses prompts over ``WINDOW`` tokens like the local model; counts ~1.5x the server's estimate."""
    return FakeLLM(model, context_window=WINDOW, chars_per_token=2.3)


def seed(store: ChunkStore, n: int = 25) -> None:
    chunks = [Chunk(f"p{i:02d}", f"handbook-{i}", f"file:///docs/handbook-{i}.md", 0, f"Presets, part {i}. {PASSAGE}",
                    f"h{i}", {"title": f"Handbook part {i}"}, Acl("system", (), "public")) for i in range(n)]
    store.upsert(chunks, np.asarray(FakeEmbedder().embed([c.text for c in chunks])))
    store.flush()


def with_rag(services: Services) -> Services:
    """The pipeline on the container, built with the composition root's three arguments (set here until
    ``Services`` has the field)."""
    if getattr(services, "rag", None) is None:
        object.__setattr__(services, "rag", RagPipeline(retrieval=services.retrieval,
                                                        generation=services.generation, llm=services.llm))
    return services


def client(settings: Settings, store: ChunkStore, *llms: FakeLLM) -> TestClient:
    seed(store)
    manager = LLMManager([LLMEntry.of(llm) for llm in llms])
    services = compose(settings.model_copy(update={"mask_pii": False}), store=store, llm=manager)
    return TestClient(create_app(with_rag(services)))


@pytest.fixture
def api(make_settings: Any, fake_store: ChunkStore) -> Iterator[TestClient]:
    with client(make_settings(), fake_store, small_llm()) as test_client:
        yield test_client


@pytest.fixture
def ensemble_api(make_settings: Any, fake_store: ChunkStore) -> Iterator[TestClient]:
    big = FakeLLM("big", context_window=16_000)
    with client(make_settings(), fake_store, small_llm("small"), big) as test_client:
        yield test_client


def post(api: TestClient, path: str, body: dict[str, Any]) -> httpx.Response:
    response = api.post(path, json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response


def query(api: TestClient, **extra: Any) -> dict[str, Any]:
    return post(api, "/query", {"query": QUESTION, "mode": "rag", **extra}).json()  # type: ignore[no-any-return]


def generate(api: TestClient, retrieval: dict[str, Any] | None = None, **generation: Any) -> dict[str, Any]:
    body = {"query": QUESTION, "retrieval_config": retrieval or {}, "generation_config": generation}
    return post(api, "/generate/rag", body).json()  # type: ignore[no-any-return]


def chat(api: TestClient, **extra: Any) -> httpx.Response:
    return post(api, "/v1/chat/completions", {"model": "rag", "messages": [{"role": "user", "content": QUESTION}],
                                              **extra})


def stream_events(response: httpx.Response) -> list[dict[str, Any]]:
    lines = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


def assert_fitted(context: dict[str, Any], retrieved: list[str]) -> None:
    used, dropped, window = context["used"], context["dropped"], context["window"]
    assert used and dropped, context
    assert used + dropped == retrieved  # best first: the lowest-ranked passages are the ones left out
    assert window["context_window"] == WINDOW and window["prompt_tokens"] + window["max_tokens"] <= WINDOW


def test_query_and_generate_rag_answer_with_k_20_over_long_passages(api: TestClient) -> None:
    answered = query(api, k=20, max_tokens=200)
    retrieved = [s["chunk_id"] for s in answered["sources"]]
    assert len(retrieved) == 20 and answered["answer"]
    assert_fitted(answered["context"], retrieved)
    single = generate(api, {"k": 20}, max_tokens=200)
    assert single["response"] and single["mode"] == "single"
    assert_fitted(single["context"], retrieved)


def test_ensemble_fits_the_smallest_window_with_k_20(ensemble_api: TestClient) -> None:
    out = generate(ensemble_api, {"k": 20}, mode="ensemble", ensemble_size=2, max_tokens=200)
    window = out["context"]["window"]
    assert window["provider"] == "fake:small" and window["context_window"] == WINDOW
    assert out["context"]["used"] and out["context"]["dropped"]
    assert [c["error"] for c in out["ensemble"]["candidates"]] == [None, None]


def test_every_route_uses_the_same_passages_for_the_same_question(api: TestClient) -> None:
    """Default k everywhere; the same prompt strategy and max_tokens, so the same fit."""
    answered = query(api, max_tokens=120)
    retrieved = [s["chunk_id"] for s in answered["sources"]]
    expected = {"used": answered["context"]["used"], "dropped": answered["context"]["dropped"]}
    rag = generate(api, prompt_strategy="simple", max_tokens=120)["context"]
    completion = chat(api, max_tokens=120).json()
    events = stream_events(chat(api, max_tokens=120, stream=True))
    seen = [rag, completion["rag_context"], events[0]["rag_context"]]
    assert all({"used": c["used"], "dropped": c["dropped"]} == expected for c in seen), seen
    assert expected["used"] + expected["dropped"] == retrieved
    assert [s["chunk_id"] for s in completion["rag_sources"]] == expected["used"]
    assert [s["index"] for s in completion["rag_sources"]] == list(range(1, len(expected["used"]) + 1))
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    assert "\n\nSources:\n[1] file:///docs/" in text and "\n\nSources:\n[1] " in completion["choices"][0][
        "message"]["content"]


def test_seed_rag_body_shrinks_max_tokens_instead_of_failing(ensemble_api: TestClient) -> None:
    """k 10, an ensemble of 2 and max_tokens 1000 (the default) on a 1,024-token model: a 503 on main."""
    out = post(ensemble_api, "/generate/rag", SEED_RAG).json()
    window = out["context"]["window"]
    assert window["max_tokens_requested"] == 1000 and window["max_tokens"] < 1000
    assert out["context"]["used"] and out["ensemble"]["candidates"]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/query", {"query": "presets " * 499, "mode": "rag"}, "query"),
    ("/generate/rag", {"query": "presets " * 499}, "query"),
])
def test_a_question_too_long_for_the_model_is_a_422_naming_it(api: TestClient, path: str, body: dict[str, Any],
                                                              field: str) -> None:
    response = api.post(path, json=body, headers=ADMIN)
    assert response.status_code == 422 and response.json()["field"] == field, response.text


def test_v1_question_too_long_is_a_422_naming_messages(api: TestClient) -> None:
    body = {"model": "rag", "messages": [{"role": "user", "content": "presets " * 499}]}
    response = api.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert response.status_code == 422 and response.json()["error"]["param"] == "messages", response.text
