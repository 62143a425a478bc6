"""Answer records and feedback over HTTP on the assembled server, and feedback steering the ``quality`` strategy: two
fake providers, one voted down, and the traffic of /query, /chat and /generate/single moves away from it (the split
before and after is printed as one JSON line: ``pytest -s tests/test_answers_feedback.py -k moves``)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from rag_ray.api.app import create_app
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.llm.fake import FakeLLM
from rag_ray.metadata.models import AnswerFeedbackRecord
from rag_ray.providers.manager import LLMEntry, LLMManager
from rag_ray.providers.retry import RetryPolicy
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Chunk
from tests.api_helpers import compose

ADMIN = {"Authorization": "Bearer admin-token"}
ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
QUESTION = {"query": "how is green tea made", "k": 2}


def seed(store: ChunkStore) -> None:
    texts = {"c-tea": "Green tea leaves are steamed soon after picking.", "c-oolong": "Oolong is partly oxidised."}
    chunks = [Chunk(cid, f"doc-{cid}", f"file:///{cid}.txt", 0, text, cid, {}, Acl("system", (), "public"))
              for cid, text in texts.items()]
    store.upsert(chunks, np.asarray(FakeEmbedder().embed([c.text for c in chunks])))
    store.flush()


def app_with(make_settings: Any, store: ChunkStore, *llms: FakeLLM, strategy: str = "quality") -> TestClient:
    seed(store)
    manager = LLMManager([LLMEntry.of(llm) for llm in llms], strategy=strategy, policy=RetryPolicy(max_retries=0))
    return TestClient(create_app(compose(make_settings(mask_pii=False), store=store, llm=manager)))


@pytest.fixture
def api(make_settings: Any, fake_store: ChunkStore) -> Iterator[TestClient]:
    with app_with(make_settings, fake_store, FakeLLM(responder=lambda m: "Steamed leaves [1].")) as client:
        yield client


def votes(api: TestClient) -> int:
    with api.app.state.services.db.session() as s:  # type: ignore[attr-defined]
        return s.scalar(select(func.count()).select_from(AnswerFeedbackRecord)) or 0


# ---- records ----
def test_answer_record_for_owner_and_admin_only(api: TestClient) -> None:
    answered = api.post("/query", headers=ALICE, json=QUESTION).json()
    record = api.get(f"/answers/{answered['answer_id']}", headers=ALICE)
    assert record.status_code == 200
    body = record.json()
    assert body["question"] == QUESTION["query"] and body["answer"] == "Steamed leaves [1]."
    assert body["provider"] == "fake:echo" and body["route"] == "query"
    assert body["passages"][0]["number"] == 1 and body["passages"][0]["chunk_id"] == answered["context"]["used"][0]
    assert body["citations"][0]["chunk_id"] == body["passages"][0]["chunk_id"]
    assert {"retrieval", "generation"} <= set(body["timings_ms"]) and body["usage"]["completion_tokens"] > 0
    assert api.get(f"/answers/{answered['answer_id']}", headers=ADMIN).status_code == 200
    assert api.get(f"/answers/{answered['answer_id']}", headers=BOB).status_code == 404
    assert api.get("/answers/ans-missing", headers=ALICE).status_code == 404


def test_generate_rag_records_scores(api: TestClient) -> None:
    answered = api.post("/generate/rag", headers=ALICE, json={"query": QUESTION["query"],
                                                              "generation_config": {"mode": "single"}}).json()
    record = api.get(f"/answers/{answered['answer_id']}", headers=ALICE).json()
    assert record["overall_score"] == pytest.approx(answered["quality"]["overall"])
    assert set(record["scores"]) == set(answered["quality"]["scores"]) and record["route"] == "generate_rag"


def test_feedback_one_vote_per_user_and_bad_input(api: TestClient) -> None:
    answer_id = api.post("/query", headers=ALICE, json=QUESTION).json()["answer_id"]
    path = f"/answers/{answer_id}/feedback"
    assert api.post(path, headers=BOB, json={"vote": "down"}).status_code == 404
    for body, field in (({"vote": "meh"}, "vote"), ({"vote": "up", "text": "x" * 4001}, "text"),
                        ({"vote": "up", "stars": 5}, "stars")):
        response = api.post(path, headers=ALICE, json=body)
        assert response.status_code == 422 and response.json()["field"] == field
    assert votes(api) == 0, "nothing stored on error"
    assert api.post(path, headers=ALICE, json={"vote": "up", "text": "good"}).json()["vote"] == "up"
    changed = api.post(path, headers=ALICE, json={"vote": "down", "text": "cites the wrong leaf"}).json()
    assert changed["provider"] == "fake:echo" and changed["quality_estimate"] == pytest.approx(1 / 3)
    feedback = api.get(f"/answers/{answer_id}", headers=ALICE).json()["feedback"]
    assert [(f["vote"], f["text"]) for f in feedback] == [("down", "cites the wrong leaf")]
    assert api.post(path, headers=ADMIN, json={"vote": "up"}).status_code == 200 and votes(api) == 2
    scraped = api.get("/metrics", headers=ADMIN).text
    assert 'rag_llm_quality_estimate{provider="fake:echo"} 0.5' in scraped
    assert 'rag_answer_feedback_total{provider="fake:echo",vote="down"} 1' in scraped


# ---- feedback steers the quality strategy ----
def split(api: TestClient, path: str, body: dict[str, Any], n: int) -> Counter[str]:
    served: Counter[str] = Counter()
    for _ in range(n):
        response = api.post(path, headers=ALICE, json=body)
        assert response.status_code == 200, response.text
        served[response.json()["model"]] += 1
    return served


def test_feedback_moves_quality_routing(make_settings: Any, fake_store: ChunkStore) -> None:
    good, bad = FakeLLM("good", responder=lambda m: "Steamed [1]."), FakeLLM("bad", responder=lambda m: "Fried [1].")
    with app_with(make_settings, fake_store, good, bad) as api:
        before = split(api, "/query", QUESTION, 40)
        for _ in range(20):  # users read answers and vote: the bad provider's are wrong
            answer = api.post("/query", headers=ALICE, json=QUESTION).json()
            vote = "down" if answer["model"] == "bad" else "up"
            api.post(f"/answers/{answer['answer_id']}/feedback", headers=ALICE, json={"vote": vote})
        after = split(api, "/query", QUESTION, 40)
        chat = split(api, "/chat", {"messages": [{"role": "user", "content": "hi"}], "load_balancing": "quality"}, 40)
        single = split(api, "/generate/single", {"query": "how is green tea made"}, 20)
        scraped = api.get("/metrics", headers=ADMIN).text
    estimate = {p: float(v) for p, v in re.findall(r'rag_llm_quality_estimate\{provider="fake:(\w+)"\} ([\d.]+)',
                                                    scraped)}
    figure = {"figure": "quality_routing", "bad_share_before": before["bad"] / 40,
              "bad_share_after_query": after["bad"] / 40, "bad_share_after_chat": chat["bad"] / 40,
              "bad_share_after_single": single["bad"] / 20, "quality_good": estimate["good"],
              "quality_bad": estimate["bad"]}
    print("\n" + json.dumps(figure))
    assert before == Counter({"good": 20, "bad": 20}), "equal estimates: an even split"
    assert estimate["bad"] <= 0.25 and estimate["good"] >= 0.9
    for share in (figure["bad_share_after_query"], figure["bad_share_after_chat"], figure["bad_share_after_single"]):
        assert 0 < share <= 0.1, "traffic moved away from the voted-down provider (and it still gets some)"


def test_other_strategies_ignore_feedback(make_settings: Any, fake_store: ChunkStore) -> None:
    good, bad = FakeLLM("good"), FakeLLM("bad")
    with app_with(make_settings, fake_store, good, bad, strategy="round_robin") as api:
        for _ in range(6):
            answer = api.post("/query", headers=ALICE, json=QUESTION).json()
            vote = "down" if answer["model"] == "bad" else "up"
            api.post(f"/answers/{answer['answer_id']}/feedback", headers=ALICE, json={"vote": vote})
        assert split(api, "/query", QUESTION, 10) == Counter({"good": 5, "bad": 5})
