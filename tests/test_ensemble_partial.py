"""Ensembles within their deadline, through HTTP on the assembled server: what finished is returned flagged partial
(each unfinished candidate says why), none finished is a 504, and no candidate outlives the request."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from rag_ray.config import Settings
from rag_ray.llm.fake import FakeLLM
from rag_ray.store.milvus import ChunkStore
from tests.api_helpers import compose
from tests.live_server import ADMIN, live_server

PROVIDERS = [{"id": "fake:fast"}, {"id": "fake:slow", "options": {"delay_s": 120}},
             {"id": "fake:local", "options": {"delay_s": 2, "serialize": True}}]  # one at a time, like the local model


@pytest.fixture
def app(make_settings: Callable[..., Settings], fake_store: ChunkStore) -> Any:
    settings = make_settings(llm_providers_json=json.dumps(PROVIDERS), mask_pii=False)
    services = compose(settings, store=fake_store)
    with live_server(services) as url:
        yield url, services


def backend(services: Any, entry_id: str) -> FakeLLM:
    llm = services.llm.entry(entry_id).backend
    assert isinstance(llm, FakeLLM)
    return llm


def ensemble(url: str, providers: list[str], size: int, timeout_s: float) -> httpx.Response:
    body = {"query": "What do deadlines bound?", "ensemble_size": size, "providers": providers, "max_tokens": 16}
    return httpx.post(f"{url}/generate/ensemble", json=body, headers={**ADMIN, "X-Request-Timeout": str(timeout_s)},
                      timeout=120)


def test_candidates_that_miss_the_deadline_are_reported_and_the_rest_answers(app: Any) -> None:
    url, services = app
    response = ensemble(url, ["fake:fast", "fake:slow"], 2, 4)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["partial"] is True and body["ensemble"]["partial"] is True and body["provider"] == "fake"
    fast, slow = body["ensemble"]["candidates"]
    assert fast["error"] is None and fast["selected"]
    assert slow["error_code"] == "timeout" and "deadline" in slow["error"] and not slow["selected"]
    assert any("partial: 1 of 2" in w for w in body["quality"]["warnings"])
    slow_llm = backend(services, "fake:slow")
    assert slow_llm.cancelled == 1 and slow_llm.active_generations == 0


def test_no_candidate_in_time_is_a_504_naming_the_deadline(app: Any) -> None:
    url, services = app
    response = ensemble(url, ["fake:slow"], 2, 3)
    assert response.status_code == 504, response.text
    body = response.json()
    assert body["error"] == "timeout" and "none of the 2 ensemble candidates" in body["message"]
    assert "X-Request-Timeout" in body["message"] and len(body["details"]["errors"]) == 2
    slow_llm = backend(services, "fake:slow")
    assert slow_llm.cancelled == 2 and slow_llm.active_generations == 0


def test_samples_of_one_serial_model_do_not_queue_past_the_deadline(app: Any) -> None:
    """Three samples of a model that generates one at a time (2 s each) under a 5 s deadline: the first answers, the
    ones still queued or running at the deadline are cancelled, and the model is idle when the response arrives."""
    url, services = app
    response = ensemble(url, ["fake:local"], 3, 5)
    assert response.status_code == 200, response.text
    candidates = response.json()["ensemble"]["candidates"]
    finished = [c for c in candidates if c["error"] is None]
    cut = [c for c in candidates if c["error_code"] == "timeout"]
    assert finished and cut and len(finished) + len(cut) == 3 and response.json()["partial"] is True
    local = backend(services, "fake:local")
    assert local.active_generations == 0 and local.cancelled == len(cut)
