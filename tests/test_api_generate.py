"""``/generate/single``, ``/generate/ensemble`` and ``/generate/rag`` over HTTP: in-process (fake LLMs with known
grounded and hallucinated answers over a seeded context) and once against the real Serve graph."""

from __future__ import annotations

import asyncio
import json
from html.parser import HTMLParser
from typing import Any

import httpx
import numpy as np
import pytest
from ray.serve.exceptions import BackPressureError

from deployments.evaluator import EvaluatorDeployment, HandleEvaluator, unwrap
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.errors import Overloaded
from rag_ray.generation import EnsembleRequest, GenerationService
from rag_ray.llm.fake import FakeLLM
from rag_ray.providers.manager import LLMEntry, LLMManager
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Chunk
from tests.api_helpers import ALICE, ApiRig, build_rig
from tests.test_generation_fixtures import CONTEXT, GROUNDED, HALLUCINATED, HALLUCINATION, QUERY, fixed
from tests.test_generation_service import SEED_ENSEMBLE, SEED_RAG, SEED_SINGLE

CANARY = "zebracanary"
PRIVATE_TEXT = f"Self-attention notes of alice: the private code word is {CANARY} for the Transformer."
FORMATS = ("plain_text", "markdown", "html", "json", "structured")


def seed_chunks(store: ChunkStore) -> None:
    """The shared context as public chunks, plus one private chunk of alice's."""
    public = [Chunk(f"pub{i}", f"doc{i}", f"file:///docs/doc{i}.md", 0, text, f"h{i}", {"title": f"Doc {i}"},
                    Acl("system", (), "public")) for i, text in enumerate(CONTEXT)]
    private = Chunk("alice0", "alice-doc", "file:///alice/notes.md", 0, PRIVATE_TEXT, "ha", {"title": "notes"},
                    Acl(ALICE.user_id, (), "private"))
    chunks = [*public, private]
    store.upsert(chunks, np.asarray(FakeEmbedder().embed([c.text for c in chunks])))
    store.flush()


def generation_rig(make_settings: Any, store: ChunkStore) -> ApiRig:
    """``build_rig`` with three providers: one grounded, one hallucinating, one echoing its prompt (which shows
    exactly which chunks reached it)."""
    seed_chunks(store)
    return build_rig(make_settings(), store, manager=LLMManager([
        LLMEntry.of(FakeLLM("m", provider="good", responder=fixed(GROUNDED))),
        LLMEntry.of(FakeLLM("m", provider="bad", responder=fixed(HALLUCINATED))),
        LLMEntry.of(FakeLLM("gpt-4", provider="fake")),  # echo; serves the seed's "model": "gpt-4"
    ]))


@pytest.fixture
def rig(make_settings: Any, fake_store: ChunkStore) -> ApiRig:
    return generation_rig(make_settings, fake_store)


def rag_body(*, mode: str = "single", model: str | None = None, fmt: str = "markdown", k: int = 3,
             **filters: Any) -> dict[str, Any]:
    generation: dict[str, Any] = {"mode": mode, "response_format": fmt, "ensemble_size": 2}
    if model:
        generation["model"] = model
    return {"query": QUERY, "retrieval_config": {"k": k, "search_strategy": "hybrid", "include_metadata": True},
            "generation_config": generation, "quality_filters": {"enable_fact_checking": True, **filters}}


def post(rig: ApiRig, path: str, body: dict[str, Any], who: str = "admin") -> httpx.Response:
    return rig.client.post(f"/generate/{path}", json=body, headers=rig.auth(who))


def test_grounded_answer_wins_the_ensemble(rig: ApiRig) -> None:
    body = {"query": QUERY, "context": " ".join(CONTEXT), "ensemble_size": 2, "providers": ["good:m", "bad:m"],
            "evaluation_metrics": ["relevance", "accuracy", "completeness"], "selection_method": "best_weighted_score"}
    r = post(rig, "ensemble", body)
    assert r.status_code == 200, r.text
    out = r.json()
    info = out["ensemble"]
    assert out["provider"] == "good" and out["mode"] == "ensemble"
    assert info["selection_method"] == "best_weighted_score" and sorted(info["providers_used"]) == ["bad", "good"]
    assert 0 <= info["consensus_score"] <= 1 and len(info["candidates"]) == 2
    for candidate in info["candidates"]:
        assert set(candidate["scores"]) == {"relevance", "accuracy", "completeness"}
    good, bad = sorted(info["candidates"], key=lambda c: c["provider"] != "good")
    assert good["selected"] and good["scores"]["accuracy"] > bad["scores"]["accuracy"]
    assert {"total_ms", "generation_ms", "evaluation_ms", "selection_ms"} <= set(out["timings"])


def test_rag_ensemble_over_retrieved_chunks(rig: ApiRig) -> None:
    r = post(rig, "rag", {**rag_body(mode="ensemble"), "generation_config": {
        "mode": "ensemble", "ensemble_size": 2, "selection_method": "best_weighted_score"}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["ensemble"]["candidates"] and out["context"]["contexts_used"] >= 2
    assert HALLUCINATION not in out["response"] and out["citations"]


def test_seed_bodies_are_accepted(rig: ApiRig) -> None:
    for path, body in (("single", SEED_SINGLE), ("ensemble", SEED_ENSEMBLE), ("rag", SEED_RAG)):
        r = post(rig, path, body, who="alice")
        assert r.status_code == 200, (path, r.text)
    assert r.json()["mode"] == "ensemble" and "consensus_score" in r.json()["ensemble"]


@pytest.mark.parametrize(("action", "field"), [("drop", "removed_sentences"), ("flag", "flagged_sentences")])
def test_fact_checking_drops_or_flags_the_unsupported_sentence(rig: ApiRig, action: str, field: str) -> None:
    r = post(rig, "rag", rag_body(model="bad:m", fact_check_action=action))
    assert r.status_code == 200, r.text
    quality = r.json()["quality"]
    assert HALLUCINATION in quality["unsupported_sentences"] and HALLUCINATION in quality[field]
    assert (HALLUCINATION in r.json()["response"]) == (action == "flag")


def test_every_output_format_parses(rig: ApiRig) -> None:
    for fmt in FORMATS:
        r = post(rig, "rag", rag_body(model="good:m", fmt=fmt))
        assert r.status_code == 200, (fmt, r.text)
        out = r.json()
        assert out["response_format"] == fmt and out["response"]
        if fmt == "json":
            assert json.loads(out["response"])["answer"]
        if fmt == "html":
            HTMLParser().feed(out["response"])
            assert out["response"].startswith('<div class="answer">')
        if fmt == "structured":
            assert {"summary", "details", "sources"} <= set(out["structured"])


def test_rag_never_sees_another_users_private_chunk(rig: ApiRig) -> None:
    body = {**rag_body(model="fake:gpt-4", k=10), "query": f"what is the code word {CANARY} of alice"}
    body["quality_filters"] = {}
    bob = post(rig, "rag", body, who="bob")
    alice = post(rig, "rag", body, who="alice")
    assert bob.status_code == alice.status_code == 200, bob.text
    bob_sources = {s["chunk_id"] for s in bob.json()["context"]["sources"]}
    assert "alice0" not in bob_sources and bob_sources  # bob still gets the public chunks
    assert "private code word" not in bob.text
    assert "alice0" in {s["chunk_id"] for s in alice.json()["context"]["sources"]}  # the probe is not vacuous


@pytest.mark.parametrize(("path", "body", "field"), [
    ("rag", {**SEED_RAG, "retrieval_config": {"k": 0}}, "retrieval_config.k"),
    ("rag", {**SEED_RAG, "retrieval_config": {"search_strategy": "magic"}}, "retrieval_config.search_strategy"),
    ("rag", {**SEED_RAG, "generation_config": {"ensemble_size": 9}}, "generation_config.ensemble_size"),
    ("single", {**SEED_SINGLE, "temperature": 5}, "temperature"),
    ("single", {**SEED_SINGLE, "model": "gpt-9"}, "model"),
    ("ensemble", {**SEED_ENSEMBLE, "evaluation_metrics": ["vibes"]}, "evaluation_metrics.0"),
    ("ensemble", {**SEED_ENSEMBLE, "surprise": True}, "surprise"),
    ("ensemble", {"mode": "high_quality"}, "query"),
    ("single", {**SEED_SINGLE, "query": "   "}, "query"),
    ("rag", {**SEED_RAG, "query": "\t\n"}, "query"),
])
def test_bad_bodies_are_422_naming_the_field(rig: ApiRig, path: str, body: dict[str, Any], field: str) -> None:
    r = post(rig, path, body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


def test_every_route_needs_a_token(rig: ApiRig) -> None:
    for path, body in (("single", SEED_SINGLE), ("ensemble", SEED_ENSEMBLE), ("rag", SEED_RAG)):
        assert rig.client.post(f"/generate/{path}", json=body).status_code == 401


def test_quality_and_consensus_are_exported_as_metrics(rig: ApiRig) -> None:
    assert post(rig, "rag", rag_body(mode="ensemble")).status_code == 200
    text = rig.client.get("/metrics", headers=rig.auth()).text
    assert 'rag_generation_quality_count{endpoint="rag",metric="overall",mode="ensemble"} 1' in text
    assert 'metric="accuracy"' in text and 'metric="relevance"' in text
    assert 'rag_generation_consensus_count{endpoint="rag",mode="ensemble"} 1' in text


# ---- the evaluator deployment's adapter, without Ray ------------------------------------------------------
class _Call:
    """A ``DeploymentResponse`` stand-in: awaitable on the loop, ``result()`` from a worker thread."""

    def __init__(self, fn: Any, args: tuple[Any, ...]):
        self.fn, self.args = fn, args

    async def _run(self) -> Any:
        out = self.fn(*self.args)
        return await out if asyncio.iscoroutine(out) else out

    def __await__(self) -> Any:
        return self._run().__await__()

    def result(self, timeout_s: float | None = None) -> Any:
        return asyncio.run(self._run())


class _Handle:
    def __init__(self, target: Any):
        self.target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.target, name)
        return type("Method", (), {"remote": staticmethod(lambda *args: _Call(method, args))})()


def test_handle_evaluator_scores_like_the_local_one(make_settings: Any) -> None:
    deployment = EvaluatorDeployment(make_settings())
    handle = _Handle(deployment)
    service = GenerationService({"good:m": FakeLLM("m", provider="good", responder=fixed(GROUNDED)),
                                 "bad:m": FakeLLM("m", provider="bad", responder=fixed(HALLUCINATED))},
                                HandleEvaluator(handle, deployment.info()))  # type: ignore[arg-type]
    request = EnsembleRequest(query=QUERY, context=" ".join(CONTEXT), ensemble_size=2)
    response = asyncio.run(service.generate_ensemble(request))
    assert response.provider == "good" and response.ensemble is not None
    assert deployment.stats()["sessions"] == 1  # question and context embedded once for both candidates
    assert isinstance(unwrap(BackPressureError(9, 8)), Overloaded)


# ---- the real Serve graph ---------------------------------------------------------------------------------
def test_generation_over_serve_uses_the_evaluator_deployment(serve_app: Any) -> None:
    from ray import serve

    from tests.test_serve_basic import _seed

    _seed(serve_app, {"transformer.txt": CONTEXT[1]})
    status = serve.status().applications["rag"].deployments["evaluator"].status
    assert str(getattr(status, "value", status)) == "HEALTHY"
    url, headers = serve_app.url, serve_app.headers()
    single = {"query": QUERY, "context": CONTEXT[0], "response_format": "json"}
    ensemble = {"query": QUERY, "context": CONTEXT[1], "ensemble_size": 2}
    for path, body in (("single", single), ("ensemble", ensemble), ("rag", rag_body(mode="ensemble"))):
        r = httpx.post(f"{url}/generate/{path}", json=body, headers=headers, timeout=120)
        assert r.status_code == 200, (path, r.text)
        out = r.json()
        assert out["quality"]["scores"] and 0 <= out["quality"]["overall"] <= 1
    assert out["ensemble"]["consensus_score"] >= 0 and out["context"]["contexts_used"] >= 1
    metrics = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
    assert "rag_generation_quality_count" in metrics
    evaluator = serve.get_deployment_handle("evaluator", app_name="rag")
    assert evaluator.stats.remote().result(timeout_s=30)["sessions"] >= 1  # the router scored answers there
