"""Conversations over HTTP on the assembled server (composition root, Milvus Lite, the real local embedder, fake LLMs):
a follow-up that only makes sense after the first two questions retrieves the right document on /query, /generate/rag
and /v1 (stored conversation or the history an OpenAI client sends), the condensed query comes back, list/get/delete
are per user (another user's conversation is a 404), bad input is a clear error and stores nothing, retention purges.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from rag_ray.api.app import create_app
from rag_ray.conversations import ConversationStore, Turn
from rag_ray.conversations.condense import CONDENSE_SYSTEM, TermsCondenser
from rag_ray.llm.base import ChatMessage
from rag_ray.llm.fake import FakeLLM
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import AnswerRecord, ConversationRecord, ConversationTurnRecord
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Chunk
from tests.api_helpers import compose
from tests.test_api_chat import parse_sse

ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}

# Five manuals, each with a second chapter: "its second chapter" alone could be any of them.
DOCS = {
    "aurora-2": "Aurora telescope manual, second chapter: collimating the primary mirror with a laser tool.",
    "aurora-author": "Mira Castellanos, an optician, wrote the Aurora manual in 2019.",
    "espresso-2": "Borealis espresso machine guide, second chapter: descaling the boiler with citric acid.",
    "kite-2": "Skyline kite handbook, second chapter: tying the bridle and choosing the flying line.",
    "kite-author": "Tomas Lindqvist, a kite maker, wrote the Skyline handbook in 2021.",
    "bike-2": "Tandem bicycle owner's book, second chapter: adjusting the derailleur and the chain tension.",
    "quilt-2": "Patchwork quilting primer, second chapter: cutting the fabric squares and pinning them.",
}
TURNS = ["What does the Skyline kite handbook cover?", "Who wrote it?", "And what about its second chapter?"]


def cites_first(messages: Sequence[ChatMessage]) -> str:
    """An answer citing passage 1 with a sentence taken from it (so the span search has words to find)."""
    prompt = messages[-1].content
    start = prompt.find("[1]")
    passage = prompt[start + 3:].strip().split("\n")[0] if start >= 0 else "nothing"
    return f"{passage.split(':')[0]} is the source [1]."


def seed(store: ChunkStore, embedder: Any) -> None:
    texts = list(DOCS.values())
    chunks = [Chunk(f"c-{name}", name, f"file:///manuals/{name}.txt", 0, text, f"h-{name}", {"title": name},
                    Acl("system", (), "public")) for name, text in DOCS.items()]
    store.upsert(chunks, np.asarray(embedder.embed(texts)))
    store.flush()


@pytest.fixture
def local_store(milvus_uri: str, collection_name: str, local_embedder: Any) -> Iterator[ChunkStore]:
    store = ChunkStore.connect(milvus_uri, collection_name, local_embedder.dimension)
    seed(store, local_embedder)
    yield store
    store.drop()


def build(make_settings: Any, store: ChunkStore, embedder: Any, llm: FakeLLM, **settings: Any) -> TestClient:
    config = make_settings(mask_pii=False, **settings)
    services = compose(config, embedder=embedder, engine=llm, store=store)
    return TestClient(create_app(services))


@pytest.fixture
def api(make_settings: Any, local_store: ChunkStore, local_embedder: Any) -> Iterator[TestClient]:
    with build(make_settings, local_store, local_embedder, FakeLLM(responder=cites_first),
               condenser="terms") as client:
        yield client


def ask(api: TestClient, question: str, conversation_id: str | None, headers: dict[str, str] = ALICE,
        **extra: Any) -> dict[str, Any]:
    body = {"query": question, "mode": "rag", "k": 3, "search_strategy": "hybrid", **extra}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    response = api.post("/query", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def counts(db: MetadataDB) -> tuple[int, int, int]:
    with db.session() as s:
        return (s.scalar(select(func.count()).select_from(ConversationRecord)) or 0,
                s.scalar(select(func.count()).select_from(ConversationTurnRecord)) or 0,
                s.scalar(select(func.count()).select_from(AnswerRecord)) or 0)


def db_of(api: TestClient) -> MetadataDB:
    db: MetadataDB = api.app.state.services.db  # type: ignore[attr-defined]
    return db


# ---- the follow-up retrieves the right document ----
def test_third_question_needs_the_first_two(api: TestClient) -> None:
    alone = ask(api, TURNS[2], None)
    assert alone["sources"][0]["doc_id"] != "kite-2", "the follow-up alone finds another manual (test not vacuous)"
    assert alone["condensed_query"] is None and alone["conversation_id"] is None

    first = ask(api, TURNS[0], "new")
    conversation = first["conversation_id"]
    assert conversation.startswith("conv-") and first["condensed_query"] is None
    second = ask(api, TURNS[1], conversation)
    assert second["sources"][0]["doc_id"] == "kite-author"
    third = ask(api, TURNS[2], conversation)
    assert third["conversation_id"] == conversation
    assert "Skyline" in third["condensed_query"] and TURNS[2] in third["condensed_query"]
    assert third["sources"][0]["doc_id"] == "kite-2"
    assert third["citations"][0]["doc_id"] == "kite-2"

    stored = api.get(f"/conversations/{conversation}", headers=ALICE).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"] * 3
    assert [m["content"] for m in stored["messages"][::2]] == TURNS
    assert stored["messages"][4]["condensed_query"] == third["condensed_query"]
    assert stored["messages"][5]["answer_id"] == third["answer_id"]
    assert api.get(f"/answers/{third['answer_id']}", headers=ALICE).json()["conversation_id"] == conversation


def test_generate_rag_continues_the_conversation(api: TestClient) -> None:
    conversation = ask(api, TURNS[0], "new")["conversation_id"]
    ask(api, TURNS[1], conversation)
    response = api.post("/generate/rag", headers=ALICE, json={
        "query": TURNS[2], "conversation_id": conversation,
        "retrieval_config": {"k": 3, "search_strategy": "hybrid"}, "generation_config": {"mode": "single"}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["conversation_id"] == conversation and "Skyline" in body["condensed_query"]
    assert body["context"]["sources"][0]["chunk_id"] == "c-kite-2"
    assert body["answer_id"] and api.get(f"/conversations/{conversation}", headers=ALICE).json()["turn_count"] == 6


def test_llm_condenser_rewrites_the_follow_up(make_settings: Any, local_store: ChunkStore,
                                              local_embedder: Any) -> None:
    def scripted(messages: Sequence[ChatMessage]) -> str:
        if messages[0].content == CONDENSE_SYSTEM:  # the condensing call: a rewrite that names the manual
            assert "Skyline kite handbook" in messages[-1].content
            return "Skyline kite handbook second chapter"
        return cites_first(messages)

    llm = FakeLLM(responder=scripted)
    with build(make_settings, local_store, local_embedder, llm) as api:  # RAG_CONDENSER defaults to llm
        conversation = ask(api, TURNS[0], "new")["conversation_id"]
        ask(api, TURNS[1], conversation)
        third = ask(api, TURNS[2], conversation)
    assert third["condensed_query"] == "Skyline kite handbook second chapter"
    assert third["sources"][0]["doc_id"] == "kite-2"


def test_llm_condenser_falls_back_to_terms_on_an_unusable_rewrite(make_settings: Any, local_store: ChunkStore,
                                                                 local_embedder: Any) -> None:
    llm = FakeLLM(responder=lambda m: "" if m[0].content == CONDENSE_SYSTEM else cites_first(m))
    with build(make_settings, local_store, local_embedder, llm) as api:
        conversation = ask(api, TURNS[0], "new")["conversation_id"]
        third = ask(api, TURNS[2], conversation)
    assert third["condensed_query"].endswith(TURNS[2]) and "Skyline" in third["condensed_query"]
    assert third["sources"][0]["doc_id"] == "kite-2"


def test_openai_client_history_and_stored_conversation(api: TestClient) -> None:
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key="alice-token", http_client=api, max_retries=0)
    history = [{"role": "user", "content": TURNS[0]}, {"role": "assistant", "content": "It covers a kite."},
               {"role": "user", "content": TURNS[1]}, {"role": "assistant", "content": "Tomas Lindqvist."},
               {"role": "user", "content": TURNS[2]}]
    completion = oai.chat.completions.create(model="rag", messages=history)  # type: ignore[arg-type]
    extra = completion.model_extra or {}
    assert "Skyline" in extra["condensed_query"] and extra["conversation_id"] is None
    assert extra["rag_sources"][0]["doc_id"] == "kite-2"
    assert extra["citations"][0]["chunk_id"] == "c-kite-2" and extra["answer_id"].startswith("ans-")

    started = oai.chat.completions.create(model="rag", messages=[{"role": "user", "content": TURNS[0]}],
                                          extra_body={"conversation_id": "new"})
    conversation = (started.model_extra or {})["conversation_id"]
    oai.chat.completions.create(model="rag", messages=[{"role": "user", "content": TURNS[1]}],
                                extra_body={"conversation_id": conversation})
    chunks = list(oai.chat.completions.create(model="rag", stream=True, extra_body={"conversation_id": conversation},
                                              messages=[{"role": "user", "content": TURNS[2]}]))
    final = chunks[-1].model_extra or {}
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert final["conversation_id"] == conversation and final["citations"][0]["doc_id"] == "kite-2"
    assert api.get(f"/conversations/{conversation}", headers=ALICE).json()["turn_count"] == 6


def test_chat_keeps_history(make_settings: Any, local_store: ChunkStore, local_embedder: Any) -> None:
    llm = FakeLLM()
    with build(make_settings, local_store, local_embedder, llm, condenser="terms") as api:
        first = api.post("/chat", headers=ALICE, json={"messages": [{"role": "user", "content": "my name is Ada"}],
                                                       "conversation_id": "new"}).json()
        conversation = first["conversation_id"]
        second = api.post("/chat", headers=ALICE, json={"messages": [{"role": "user", "content": "and my name?"}],
                                                        "conversation_id": conversation})
        assert second.status_code == 200, second.text
        assert [m.content for m in llm.prompts[-1]] == ["my name is Ada", "echo: my name is Ada", "and my name?"]
        streamed = api.post("/chat/stream", headers=ALICE, json={
            "messages": [{"role": "user", "content": "once more"}], "conversation_id": conversation})
        done = json.loads(next(d for e, d in parse_sse(streamed.text) if e == "done"))
        assert done["conversation_id"] == conversation and done["answer_id"].startswith("ans-")
        assert api.get(f"/conversations/{conversation}", headers=ALICE).json()["turn_count"] == 6


# ---- per user: list, get, delete; another user's conversation does not exist for them ----
def test_conversations_are_per_user(api: TestClient) -> None:
    conversation = ask(api, TURNS[0], "new")["conversation_id"]
    ask(api, "Hubble mirrors", "new", headers=BOB)
    listed = api.get("/conversations", headers=ALICE).json()
    assert [c["conversation_id"] for c in listed] == [conversation] and listed[0]["title"] == TURNS[0]
    before = counts(db_of(api))
    for method, path in (("GET", f"/conversations/{conversation}"), ("DELETE", f"/conversations/{conversation}")):
        assert api.request(method, path, headers=BOB).status_code == 404
    foreign = api.post("/query", headers=BOB, json={"query": TURNS[1], "conversation_id": conversation})
    assert foreign.status_code == 404 and foreign.json()["field"] == "conversation_id"
    unknown = api.post("/chat", headers=ALICE, json={"messages": [{"role": "user", "content": "hi"}],
                                                     "conversation_id": "conv-unknown"})
    assert unknown.status_code == 404
    assert counts(db_of(api)) == before, "nothing stored on error"
    assert api.delete(f"/conversations/{conversation}", headers=ALICE).status_code == 204
    assert api.get(f"/conversations/{conversation}", headers=ALICE).status_code == 404
    assert api.get("/conversations", headers=ALICE).json() == []


# ---- bad input: clear errors naming the field, nothing stored ----
@pytest.mark.parametrize(("path", "body", "status", "field"), [
    ("/query", {"query": "x", "conversation_id": "../etc"}, 422, "conversation_id"),
    ("/query", {"query": "x", "mode": "search", "conversation_id": "new"}, 422, "conversation_id"),
    ("/chat", {"messages": [{"role": "wizard", "content": "x"}], "conversation_id": "new"}, 422, "messages.0.role"),
    ("/v1/chat/completions", {"model": "rag", "messages": [{"role": "tool", "content": "x"}],
                              "conversation_id": "new"}, 422, "messages.0.role"),
    ("/v1/chat/completions", {"model": "rag", "messages": [{"role": "user", "content": "x"}] * 257}, 422, "messages"),
    ("/v1/chat/completions", {"model": "rag", "messages": [{"role": "user", "content": "x" * 100_001}]}, 422,
     "messages"),
    ("/generate/rag", {"query": "x", "conversation_id": 7}, 422, "conversation_id"),
    ("/v1/chat/completions", {"model": "fake:echo", "messages": [{"role": "user", "content": "x"}],
                              "conversation_id": "new"}, 422, "conversation_id"),
])
def test_bad_history_input(api: TestClient, path: str, body: dict[str, Any], status: int, field: str) -> None:
    before = counts(db_of(api))
    response = api.post(path, json=body, headers=ALICE)
    assert response.status_code == status, response.text
    payload = response.json()
    named = payload["error"]["param"] if path.startswith("/v1") else payload["field"]
    assert named == field
    assert counts(db_of(api)) == before


def test_a_full_conversation_is_413_and_unchanged(make_settings: Any, local_store: ChunkStore,
                                                  local_embedder: Any) -> None:
    with build(make_settings, local_store, local_embedder, FakeLLM(responder=cites_first), condenser="terms",
               conversation_max_turns=4) as api:
        conversation = ask(api, TURNS[0], "new")["conversation_id"]
        ask(api, TURNS[1], conversation)
        before = counts(db_of(api))
        response = api.post("/query", headers=ALICE, json={"query": TURNS[2], "conversation_id": conversation})
        assert response.status_code == 413 and response.json()["field"] == "conversation_id"
        assert "RAG_CONVERSATION_MAX_TURNS" in response.json()["message"]
        assert counts(db_of(api)) == before


# ---- retention and the deterministic condenser ----
def test_retention_purges_idle_conversations(tmp_path: Any) -> None:
    db = MetadataDB(f"sqlite:///{tmp_path / 'meta.db'}")
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = ConversationStore(db, clock=lambda: now[0])
    old = store.append("u1", None, [Turn("user", "old question"), Turn("assistant", "old answer")])
    now[0] += timedelta(days=20)
    fresh = store.append("u1", None, [Turn("user", "new question"), Turn("assistant", "new answer")])
    now[0] += timedelta(days=15)
    assert store.purge(timedelta(days=30)) == 1
    assert [c.conversation_id for c in store.list("u1")] == [fresh]
    with pytest.raises(Exception, match="no conversation"):
        store.get("u1", old)
    db.dispose()


def test_terms_condenser_prepends_salient_words() -> None:
    history = [ChatMessage("user", TURNS[0]), ChatMessage("assistant", "It covers a kite."),
               ChatMessage("user", TURNS[1])]
    condensed = TermsCondenser.now(history, TURNS[2])
    assert condensed.method == "terms" and condensed.query.endswith(TURNS[2])
    assert {"Skyline", "kite", "handbook"} <= set(condensed.query.split())
    assert TermsCondenser.now([], TURNS[0]).method == "none"
