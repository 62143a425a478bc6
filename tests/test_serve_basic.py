"""The Serve app over real HTTP: health, auth, query in search and rag mode, errors."""

from __future__ import annotations

import httpx
import numpy as np
import psutil

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Chunk


def _seed(serve_app, texts: dict[str, str]) -> None:
    s = serve_app.settings
    store = ChunkStore.connect(s.milvus_address, s.collection, 64)
    emb = FakeEmbedder()
    chunks = [Chunk(f"c{i}", f"d{i}", f"/docs/{name}", 0, text, f"h{i}", {"file_type": "txt"}, Acl("system", (),
                                                                                                   "public"))
              for i, (name, text) in enumerate(texts.items())]
    store.upsert(chunks, np.asarray(emb.embed([c.text for c in chunks])))


def test_health_needs_no_auth(serve_app):
    response = httpx.get(f"{serve_app.url}/health", headers={"X-Request-ID": "serve-req-1"}, timeout=30)
    body = response.json()
    assert body["status"] == "ok" and body["components"]["milvus"]["status"] == "ok"
    assert response.headers.get_list("x-request-id") == ["serve-req-1"]  # Serve's proxy sets it once, our id


def test_query_requires_a_token(serve_app):
    r = httpx.post(f"{serve_app.url}/query", json={"query": "x"}, timeout=30)
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"


def test_query_search_and_rag_modes(serve_app):
    _seed(serve_app, {"volcano.txt": "Volcanoes erupt molten lava and ash from the mantle.",
                      "tea.txt": "Green tea is brewed from Camellia sinensis leaves."})
    r = httpx.post(f"{serve_app.url}/query", headers=serve_app.headers(),
                   json={"query": "how is green tea brewed", "mode": "search", "k": 2}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["sources"][0]["source"] == "/docs/tea.txt"
    r = httpx.post(f"{serve_app.url}/query", headers=serve_app.headers(),
                   json={"query": "what do volcanoes erupt", "mode": "rag", "k": 1}, timeout=60)
    body = r.json()
    assert r.status_code == 200, r.text
    assert body["provider"] == "fake" and "Volcanoes erupt" in body["answer"]  # the echo LLM repeats the prompt
    assert body["sources"][0]["source"] == "/docs/volcano.txt"


def test_bad_input_names_the_field(serve_app):
    r = httpx.post(f"{serve_app.url}/query", headers=serve_app.headers(), json={"query": "x", "k": 0}, timeout=30)
    assert r.status_code == 422 and r.json()["field"] == "k"
    r = httpx.post(f"{serve_app.url}/query", headers=serve_app.headers(), json={"query": "x", "bogus": 1}, timeout=30)
    assert r.status_code == 422 and r.json()["field"] == "bogus"
    r = httpx.post(f"{serve_app.url}/query", headers={**serve_app.headers(), "content-type": "application/json"},
                   content=b"{not json", timeout=30)
    assert r.status_code == 422 and r.json()["field"] == "body"
    assert r.json()["message"].startswith("body: invalid JSON at character 1: ")


def _processes_titled(fragment: str) -> list[psutil.Process]:
    """The machine's processes whose title (Ray names its workers after their actor) contains ``fragment``."""
    return [p for p in psutil.process_iter(["cmdline"]) if any(fragment in part for part in p.info["cmdline"] or ())]


def test_serves_controller_reconciles_at_the_configured_interval(serve_app):
    """Serve's controller runs under the Ray init_ray starts, which gives it RAY_SERVE_CONTROL_LOOP_INTERVAL_S (2 Hz
    instead of Serve's 10: a third of the CPU an idle server spent, jobs/ray_executor.py); an operator's value wins."""
    import os

    from jobs.ray_executor import SERVE_CONTROL_LOOP_ENV, SERVE_CONTROL_LOOP_INTERVAL_S

    controllers = _processes_titled("ray::ServeController")
    assert controllers
    expected = os.environ.get(SERVE_CONTROL_LOOP_ENV, str(SERVE_CONTROL_LOOP_INTERVAL_S))
    assert expected == str(SERVE_CONTROL_LOOP_INTERVAL_S)
    assert {p.environ().get(SERVE_CONTROL_LOOP_ENV) for p in controllers} == {expected}


def test_serves_replicas_hand_their_metrics_to_ray_once_a_second(serve_app):
    """Every replica (router, embedder, LLM, evaluator) runs with RAY_SERVE_METRICS_EXPORT_INTERVAL_MS from init_ray:
    Serve's 100 ms woke each one ten times a second for metrics Ray exports every 10 s."""
    import os

    from jobs.ray_executor import SERVE_METRICS_EXPORT_ENV, SERVE_METRICS_EXPORT_INTERVAL_MS

    replicas = _processes_titled("ray::ServeReplica")
    assert len(replicas) >= 3, replicas  # router, embedder, the LLM deployment, ...
    expected = os.environ.get(SERVE_METRICS_EXPORT_ENV, str(SERVE_METRICS_EXPORT_INTERVAL_MS))
    assert expected == str(SERVE_METRICS_EXPORT_INTERVAL_MS)
    assert {p.environ().get(SERVE_METRICS_EXPORT_ENV) for p in replicas} == {expected}
