"""Requests-per-period limits and LLM token/cost budgets per user, API key and group, through HTTP: 429 with
``Retry-After`` and a message naming the limit, windows that roll over on an injected clock, a concurrent burst over
two router replicas that cannot overspend, the admin API (``/admin/limits``, ``/admin/usage``) and the CLI."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from rag_ray.cli.main import app as cli_app
from rag_ray.metadata import MetadataDB
from rag_ray.store.milvus import ChunkStore
from tests.guard_helpers import CHAT, PRICED, START, Rig, build_rig, reserved_tokens

pytest_plugins = ["tests.access_fixtures"]

R = reserved_tokens()  # tokens one /chat call reserves and uses


@pytest.fixture
def rig(make_settings: Any, identity_db: MetadataDB, fake_store: ChunkStore) -> Iterator[Rig]:
    built = build_rig(make_settings(llm_providers_json=PRICED), identity_db, fake_store)
    yield built
    built.close()


def set_limit(rig: Rig, **body: Any) -> dict[str, Any]:
    response = rig.client.put("/admin/limits", headers=rig.headers("admin"), json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def chat(rig: Rig, who: str, client: Any = None, headers: dict[str, str] | None = None) -> Any:
    return (client or rig.client).post("/chat", headers=headers or rig.headers(who), json=CHAT)


def assert_limited(response: Any, *fragments: str, retry_after: int | None = None) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "rate_limited"
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    if retry_after is not None:
        assert response.headers["Retry-After"] == str(retry_after)


def test_requests_per_minute_per_user_and_the_window_rolls_over(rig: Rig) -> None:
    rule = set_limit(rig, subject_kind="user", subject="alice", metric="requests", route_class="llm",
                     period="minute", limit=2)
    assert rule["subject_id"] == rig.user_ids["alice"] and rule["limit"] == 2
    assert [chat(rig, "alice").status_code for _ in range(2)] == [200, 200]
    rig.clock.advance(15)
    refused = chat(rig, "alice")
    assert_limited(refused, "2 requests per minute on llm routes for user alice", rule["limit_id"], retry_after=45)
    assert refused.json()["details"]["limit_id"] == rule["limit_id"]
    assert chat(rig, "bob").status_code == 200  # bob has no limit
    assert rig.client.get("/auth/me", headers=rig.headers("alice")).status_code == 200  # other route classes
    rig.clock.advance(45)  # the next minute
    assert chat(rig, "alice").status_code == 200


def test_requests_per_api_key_and_per_group(rig: Rig) -> None:
    made = rig.client.post("/admin/api-keys", headers=rig.headers("admin"), json={"user": "bob", "name": "ci"})
    key, key_id = made.json()["key"], made.json()["key_id"]
    set_limit(rig, subject_kind="key", subject=key_id, metric="requests", route_class="all", period="minute", limit=1)
    with_key = {"Authorization": f"Bearer {key}"}
    assert rig.client.get("/auth/me", headers=with_key).status_code == 200
    assert_limited(rig.client.get("/auth/me", headers=with_key), f"1 requests per minute on all routes for API key "
                                                                 f"{key_id}")
    assert rig.client.get("/auth/me", headers=rig.headers("bob")).status_code == 200  # bob's JWT: not the key

    rig.clock.advance(60)
    set_limit(rig, subject_kind="group", subject="eng", metric="requests", route_class="llm", period="minute",
              limit=3)
    assert [chat(rig, who).status_code for who in ("alice", "bob", "alice")] == [200, 200, 200]
    assert_limited(chat(rig, "bob"), "3 requests per minute on llm routes for group eng")  # eng's members together
    assert chat(rig, "carol").status_code == 200  # sales only


def test_wildcard_rule_gives_every_user_their_own_count_and_own_rules_win(rig: Rig) -> None:
    set_limit(rig, subject_kind="user", subject="*", metric="requests", route_class="retrieval", period="minute",
              limit=1)
    set_limit(rig, subject_kind="user", subject="erin", metric="requests", route_class="retrieval", period="minute",
              limit=3)
    embed = {"input": ["quarterly report"]}
    for who in ("dave", "carol"):
        assert rig.client.post("/embeddings", headers=rig.headers(who), json=embed).status_code == 200
        assert_limited(rig.client.post("/embeddings", headers=rig.headers(who), json=embed),
                       f"1 requests per minute on retrieval routes for user {who}")
    codes = [rig.client.post("/embeddings", headers=rig.headers("erin"), json=embed).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_token_and_cost_budgets_per_day_and_month(rig: Rig) -> None:
    set_limit(rig, subject_kind="user", subject="alice", metric="tokens", period="day", limit=2 * R + R // 2)
    assert [chat(rig, "alice").status_code for _ in range(2)] == [200, 200]
    calls = rig.llm.calls
    midnight = (int(START) // 86400 + 1) * 86400
    refused = chat(rig, "alice")
    assert_limited(refused, f"token budget of {2 * R + R // 2} LLM tokens per UTC day for user alice",
                   retry_after=int(midnight - START))
    assert refused.json()["details"]["used"] == 2 * R
    assert rig.llm.calls == calls  # refused before any provider was asked
    rag = rig.client.post("/query", headers=rig.headers("alice"), json={"query": "numbers?", "mode": "rag"})
    assert_limited(rag, "token budget")  # every LLM-backed route: the RAG pipeline's call is refused too
    assert rig.llm.calls == calls

    # cost: one USD per token (RAG_LLM_PROVIDERS prices); sales may spend 1.5 calls' worth per month
    set_limit(rig, subject_kind="group", subject="sales", metric="cost_usd", period="month", limit=1.5 * R)
    assert chat(rig, "carol").status_code == 200
    assert_limited(chat(rig, "bob"), f"cost budget of ${1.5 * R:g} per UTC month for group sales",
                   f"this call may use up to {R:g} USD")
    rig.clock.now = midnight + 1  # a new day: alice's tokens come back, sales' month is still spent
    assert chat(rig, "alice").status_code == 200
    assert chat(rig, "carol").status_code == 429

    usage = rig.client.get("/admin/usage", headers=rig.headers("admin"), params={"group_by": "user"}).json()
    by_user = {row["username"]: row for row in usage["usage"]}
    assert by_user["alice"]["total_tokens"] == 3 * R and by_user["alice"]["calls"] == 3
    assert by_user["carol"]["cost_usd"] == pytest.approx(R)
    assert usage["totals"]["calls"] == 4


def test_streamed_answers_are_charged_too(rig: Rig) -> None:
    set_limit(rig, subject_kind="user", subject="alice", metric="tokens", period="day", limit=R + R // 2)
    streamed = rig.client.post("/chat/stream", headers=rig.headers("alice"), json=CHAT)
    assert streamed.status_code == 200 and "event: done" in streamed.text
    assert_limited(chat(rig, "alice"), "token budget")
    usage = rig.client.get("/admin/usage", headers=rig.headers("admin"), params={"user": "alice"}).json()
    assert usage["totals"]["calls"] == 1 and usage["totals"]["total_tokens"] > 0


def burst(requests: list[tuple[Any, dict[str, str]]], path: str, body: dict[str, Any]) -> Counter[int]:
    """Every request at once (threads released together); the status codes."""
    start = threading.Barrier(len(requests))
    codes: Counter[int] = Counter()
    lock = threading.Lock()

    def send(client: Any, headers: dict[str, str]) -> None:
        start.wait()
        status = client.post(path, headers=headers, json=body).status_code
        with lock:
            codes[status] += 1

    threads = [threading.Thread(target=send, args=request) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


def test_concurrent_burst_over_two_replicas_cannot_overspend(make_settings: Any, identity_db: MetadataDB,
                                                            fake_store: ChunkStore) -> None:
    settings = make_settings(llm_providers_json=PRICED, limits_cache_s=0)
    rig = build_rig(settings, identity_db, fake_store, replicas=2)
    try:
        budget = 10 * R + R // 2  # ten calls fit, the eleventh does not
        set_limit(rig, subject_kind="user", subject="alice", metric="tokens", period="day", limit=budget)
        headers = rig.headers("alice")
        requests = [(rig.replicas[i % 2].client, headers) for i in range(30)]
        codes = burst(requests, "/chat", CHAT)
        assert codes == {200: 10, 429: 20}
        report = rig.client.get("/admin/usage", headers=rig.headers("admin"), params={"user": "alice"}).json()
        assert report["totals"]["total_tokens"] == 10 * R <= budget

        set_limit(rig, subject_kind="user", subject="bob", metric="requests", route_class="llm", period="minute",
                  limit=7)
        bob = rig.headers("bob")
        assert burst([(rig.replicas[i % 2].client, bob) for i in range(20)], "/chat", CHAT) == {200: 7, 429: 13}
    finally:
        rig.close()


def test_admin_limits_api_validates_lists_deletes_and_is_admin_only(rig: Rig) -> None:
    admin = rig.headers("admin")
    bad = rig.client.put("/admin/limits", headers=admin, json={"subject_kind": "user", "subject": "alice",
                                                              "metric": "tokens", "route_class": "llm",
                                                              "period": "day", "limit": 10})
    assert bad.status_code == 422 and bad.json()["field"] == "route_class"
    unknown = rig.client.put("/admin/limits", headers=admin, json={"subject_kind": "user", "subject": "nobody",
                                                                  "metric": "requests", "period": "minute",
                                                                  "limit": 1})
    assert unknown.status_code == 404
    denied = rig.client.put("/admin/limits", headers=rig.headers("alice"), json={
        "subject_kind": "user", "subject": "alice", "metric": "requests", "period": "minute", "limit": 1000})
    assert denied.status_code == 403
    first = set_limit(rig, subject_kind="user", subject="alice", metric="requests", route_class="llm",
                      period="minute", limit=5)
    again = set_limit(rig, subject_kind="user", subject=rig.user_ids["alice"], metric="requests", route_class="llm",
                      period="minute", limit=6)
    assert again["limit_id"] == first["limit_id"] and again["limit"] == 6  # set replaces the amount
    listed = rig.client.get("/admin/limits", headers=admin, params={"subject_kind": "user", "subject": "alice"})
    assert [r["limit_id"] for r in listed.json()["limits"]] == [first["limit_id"]]
    assert rig.client.delete(f"/admin/limits/{first['limit_id']}", headers=admin).json()["deleted"] is True
    assert rig.client.get("/admin/limits", headers=admin).json()["count"] == 0


def test_usage_report_per_user_key_provider_and_model(rig: Rig) -> None:
    made = rig.client.post("/admin/api-keys", headers=rig.headers("admin"), json={"user": "alice"}).json()
    assert chat(rig, "alice").status_code == 200
    assert chat(rig, "alice", headers={"Authorization": f"Bearer {made['key']}"}).status_code == 200
    assert chat(rig, "bob").status_code == 200
    rows = rig.client.get("/admin/usage", headers=rig.headers("admin")).json()["usage"]
    seen = {(r["username"], r["key"], r["provider"], r["model"]): r["calls"] for r in rows}
    assert seen == {("alice", None, "fake", "echo"): 1, ("alice", made["key_id"], "fake", "echo"): 1,
                    ("bob", None, "fake", "echo"): 1}
    assert all(r["total_tokens"] == R and r["cost_usd"] == pytest.approx(R) for r in rows)
    only_key = rig.client.get("/admin/usage", headers=rig.headers("admin"),
                              params={"key": made["key_id"], "group_by": "key,model"}).json()
    assert [(r["key"], r["model"], r["calls"]) for r in only_key["usage"]] == [(made["key_id"], "echo", 1)]


def test_cli_limits_and_usage(rig: Rig, make_settings: Any) -> None:
    settings = make_settings()
    env = {"DATABASE_URL": rig.db.url, "RAG_DATA_DIR": str(settings.data_dir), "SECRET_KEY": "x" * 40,
           "RAG_LOG_FILE": "false"}
    runner = CliRunner()
    made = runner.invoke(cli_app, ["limits", "set", "user", "alice", "requests", "1", "--route-class", "llm"], env=env)
    assert made.exit_code == 0, made.output
    assert "1 requests per minute on llm routes for user" in made.output
    listed = runner.invoke(cli_app, ["limits", "list", "--format", "json"], env=env)
    rules = json.loads(listed.output)
    assert [(r["subject_id"], r["metric"], r["limit"]) for r in rules] == [(rig.user_ids["alice"], "requests", 1)]
    rig.services.guard.limits.invalidate()  # the server re-reads rules after RAG_LIMITS_CACHE_S; don't wait
    assert chat(rig, "alice").status_code == 200
    assert chat(rig, "alice").status_code == 429
    report = runner.invoke(cli_app, ["usage", "report", "--group-by", "user,model", "--format", "json"], env=env)
    assert report.exit_code == 0, report.output
    assert [(r["username"], r["model"], r["calls"]) for r in json.loads(report.output)] == [("alice", "echo", 1)]
    removed = runner.invoke(cli_app, ["limits", "delete", rules[0]["limit_id"]], env=env)
    assert removed.exit_code == 0 and "removed" in removed.output
    audit = runner.invoke(cli_app, ["audit", "list", "--action", "limits.", "--format", "json"], env=env)
    events = json.loads(audit.output)
    assert [e["action"] for e in events] == ["limits.delete", "limits.set"]
    assert all(e["actor_name"].startswith("cli:") for e in events)


def test_a_limit_on_every_user_never_locks_the_admins_out_of_lifting_it(rig: Rig) -> None:
    rule = set_limit(rig, subject_kind="user", subject="*", metric="requests", route_class="all", period="minute",
                     limit=0)
    admin = rig.headers("admin")
    assert_limited(rig.client.get("/auth/me", headers=admin), "0 requests per minute on all routes")
    assert_limited(rig.client.get("/admin/usage", headers=admin), "0 requests per minute on all routes")
    assert rig.client.get("/admin/limits", headers=rig.headers("alice")).status_code == 403  # admins only
    assert rig.client.get("/admin/limits", headers=admin).json()["count"] == 1
    assert rig.client.delete(f"/admin/limits/{rule['limit_id']}", headers=admin).json()["deleted"] is True
    assert rig.client.get("/auth/me", headers=admin).status_code == 200
