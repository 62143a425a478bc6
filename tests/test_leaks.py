"""The leak suite: canary documents under different ACLs, probed over HTTP on every retrieval path.

Each probe is one route + body; probes whose route does not exist (yet) in the app are skipped, so
adding a retrieval route means adding one ``Probe`` line here. A response leaks when it contains the
canary word or doc id of a document its caller may not read (sources, answer text, anything).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.access_fixtures import DEFAULT_USERS, DocSpec, World

pytest_plugins = ["tests.access_fixtures"]

Body = Callable[[str, Any], dict[str, Any]]


@dataclass(frozen=True)
class Probe:
    name: str
    method: str
    path: str
    body: Body | None = None
    lists_all: bool = False  # with the generic query it returns every visible document (recall check)


def _query(mode: str, strategy: str) -> Body:
    return lambda q, f: {"query": q, "mode": mode, "k": 50, "search_strategy": strategy, "filters": f}


def _conversation(strategy: str) -> Body:
    """/query in a new conversation: the answer, its citations (chunk, document, quoted span) and the record."""
    return lambda q, f: {"query": q, "mode": "rag", "k": 50, "search_strategy": strategy, "filters": f,
                         "conversation_id": "new"}


def _openai_history(stream: bool) -> Body:
    """The whole history, as OpenAI clients send it: the follow-up is condensed with it before retrieval."""
    return lambda q, f: {"model": "rag", "stream": stream, "messages": [
        {"role": "user", "content": q}, {"role": "assistant", "content": "noted"}, {"role": "user", "content": q}]}


def _generate_rag(strategy: str, mode: str) -> Body:
    """Sources, prompt echo and candidates all carry retrieved text; only dict filters fit retrieval_config."""
    return lambda q, f: {"query": q, "generation_config": {"mode": mode, "ensemble_size": 2},
                         "retrieval_config": {"k": 20, "search_strategy": strategy, "include_metadata": True,
                                              "filters": f if isinstance(f, dict) else None}}


PROBES: list[Probe] = [
    Probe("query search dense", "POST", "/query", _query("search", "dense"), lists_all=True),
    Probe("query search sparse", "POST", "/query", _query("search", "sparse"), lists_all=True),
    Probe("query search hybrid", "POST", "/query", _query("search", "hybrid"), lists_all=True),
    Probe("query rag dense", "POST", "/query", _query("rag", "dense")),
    Probe("query rag sparse", "POST", "/query", _query("rag", "sparse")),
    Probe("query rag hybrid", "POST", "/query", _query("rag", "hybrid")),
    # Routes added by other modules; skipped until they exist.
    Probe("generate rag hybrid single", "POST", "/generate/rag", _generate_rag("hybrid", "single")),
    Probe("generate rag dense ensemble", "POST", "/generate/rag", _generate_rag("dense", "ensemble")),
    Probe("generate rag sparse single", "POST", "/generate/rag", _generate_rag("sparse", "single")),
    Probe("openai chat completions (rag)", "POST", "/v1/chat/completions", lambda q, f: {
        "model": "rag", "messages": [{"role": "user", "content": q}]}),
    # conversations and citations: condensed follow-ups, citations with quoted spans, streamed extension fields
    Probe("query rag conversation hybrid", "POST", "/query", _conversation("hybrid")),
    Probe("openai chat completions (rag, history)", "POST", "/v1/chat/completions", _openai_history(False)),
    Probe("openai chat completions (rag, history, stream)", "POST", "/v1/chat/completions", _openai_history(True)),
    Probe("generate rag conversation", "POST", "/generate/rag", lambda q, f: {
        "query": q, "conversation_id": "new", "generation_config": {"mode": "single"}}),
    Probe("documents list", "GET", "/documents"),
    Probe("documents get", "GET", "/documents/{doc_id}"),  # path probes run once per canary doc id
]

GENERIC_QUERY = "quarterly report secret code"
HOSTILE_FILTERS: list[Any] = [
    None,
    [{"field": "visibility", "op": "in", "value": ["private", "group", "public"]}],
    {"owner_id": '") or true or ("'},
    [{"field": "group_ids", "op": "contains_any", "value": ["eng", "sales", "hr"]}],
    # well-typed values in the positions the type checks guard: still ANDed with the access filter
    [{"field": "owner_id", "op": "in", "value": ['") or true or ("', "system"]}],
    [{"field": "chunk_index", "op": "gte", "value": -(2**63)}],
    {"title": '\\") or true or ("\\'},
]


def route_exists(world: World, probe: Probe) -> bool:
    paths = world.client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return probe.method.lower() in paths.get(probe.path, {})


def send(world: World, probe: Probe, username: str, query: str, filters: Any) -> httpx.Response:
    headers = world.headers(username)
    path = probe.path.replace("{doc_id}", query)
    if probe.body is None:
        return world.client.request(probe.method, path, headers=headers)
    return world.client.request(probe.method, probe.path, headers=headers, json=probe.body(query, filters))


def leaked(world: World, username: str, text: str) -> list[str]:
    """Documents named in ``text`` that ``username`` may not see (the user's DB view read once per probe)."""
    named = [d for d in world.docs if d.canary in text or d.doc_id in text]
    if not named:
        return []
    principal = world.principal(username)
    return [d.name for d in named if not world.visible_to(principal, d)]


def seen(world: World, text: str) -> set[str]:
    return {d.name for d in world.docs if d.canary in text}


@dataclass
class Tally:
    probes: int = 0
    leaks: int = 0
    skipped_routes: int = 0
    statuses: dict[str, Counter[int]] = field(default_factory=dict)

    def record(self, found: list[str], where: str, failures: list[str]) -> None:
        self.probes += 1
        if found:
            self.leaks += len(found)
            failures.append(f"{where}: leaked {found}")


def distinct(probe: Probe, queries: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``queries`` less those whose request repeats an earlier one: a route that ignores filters sends the same request
    for every hostile filter, a route without a body the same request for every query (the first is kept: it strips
    the least from the response before the leak check)."""
    seen: set[str] = set()
    kept = []
    for query, filters in queries:
        body = probe.body(query, filters) if probe.body else None
        request = [probe.method, probe.path.replace("{doc_id}", query), body]
        key = json.dumps(request, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            kept.append((query, filters))
    return kept


def run_suite(world: World, queries: list[tuple[str, Any]], tally: Tally, failures: list[str]) -> None:
    for probe in PROBES:
        if not route_exists(world, probe):
            tally.skipped_routes += 1
            continue
        probe_queries = distinct(probe, [(d.doc_id, None) for d in world.docs] if "{doc_id}" in probe.path
                                 else queries)
        for spec in DEFAULT_USERS:
            for query, filters in probe_queries:
                response = send(world, probe, spec.username, query, filters)
                tally.statuses.setdefault(probe.name, Counter())[response.status_code] += 1
                where = f"{probe.name} as {spec.username} q={query!r} f={filters!r} [{response.status_code}]"
                if probe.path == "/query" and response.status_code != 200:
                    failures.append(f"{where}: unexpected status {response.text[:200]}")
                echoed_query_removed = response.text.replace(query, "")  # the caller's own words are no leak
                tally.record(leaked(world, spec.username, echoed_query_removed), where, failures)


def check_recall(world: World, failures: list[str]) -> int:
    """The suite is not vacuous: search probes return every document the caller may read."""
    checks = 0
    for probe in (p for p in PROBES if p.lists_all and route_exists(world, p)):
        for spec in DEFAULT_USERS:
            text = send(world, probe, spec.username, GENERIC_QUERY, None).text
            expected = {d.name for d in world.docs if world.visible(spec.username, d)}
            checks += 1
            if seen(world, text) != expected:
                failures.append(f"{probe.name} as {spec.username}: saw {sorted(seen(world, text))}, "
                                f"expected {sorted(expected)}")
    return checks


def test_no_leaks_on_any_retrieval_path(world: World) -> None:
    queries = [(GENERIC_QUERY, f) for f in HOSTILE_FILTERS] + [(d.canary, None) for d in world.docs]
    tally, failures = Tally(), []
    run_suite(world, queries, tally, failures)
    recall_checks = check_recall(world, failures)
    print(f"\nleak suite: probes={tally.probes} leaks={tally.leaks} recall_checks={recall_checks} "
          f"routes_probed={len(PROBES) - tally.skipped_routes}/{len(PROBES)}")
    for name, counts in tally.statuses.items():
        print(f"  {name}: {dict(counts)}")
    assert not failures, "\n".join(failures[:20])
    assert tally.leaks == 0
    assert tally.probes >= len(DEFAULT_USERS) * len(queries) * 6


def test_reference_model_sanity(world: World) -> None:
    """The canary layout covers every ACL branch: own, group, public, private-with-groups, hidden."""
    visible = {u.username: {d.name for d in world.docs if world.visible(u.username, d)} for u in DEFAULT_USERS}
    assert visible["admin"] == {d.name for d in world.docs}
    assert visible["alice"] == {"alice_private", "alice_eng", "public_memo"}
    assert visible["bob"] == {"alice_eng", "bob_sales", "bob_private", "public_memo"}
    assert visible["carol"] == {"bob_sales", "carol_private_tagged", "public_memo"}
    assert visible["dave"] == {"group_no_groups", "public_memo"}
    assert visible["erin"] == {"hr_only", "public_memo"}
    assert isinstance(world.docs[0], DocSpec)


def test_detector_catches_a_missing_access_filter(world: World, monkeypatch: Any) -> None:
    """Drop the access filter on purpose: the same probes must now report leaks."""
    import rag_ray.retrieval.service as retrieval

    monkeypatch.setattr(retrieval, "retrieval_filter", lambda principal, filters=None, policy=None, **_: "")
    tally, failures = Tally(), []
    for doc in world.docs:
        response = send(world, PROBES[0], "dave", doc.canary, None)
        tally.record(leaked(world, "dave", response.text.replace(doc.canary, "")), doc.name, failures)
    assert tally.leaks > 0


# ---- answer records and conversations: per user, whatever the route ----
def foreign_requests(answer_id: str, conversation_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every way to reach someone else's answer or conversation."""
    follow_up = "and what about it?"
    return [("GET", f"/answers/{answer_id}", None),
            ("POST", f"/answers/{answer_id}/feedback", {"vote": "down"}),
            ("GET", f"/conversations/{conversation_id}", None),
            ("DELETE", f"/conversations/{conversation_id}", None),
            ("POST", "/query", {"query": follow_up, "conversation_id": conversation_id}),
            ("POST", "/generate/rag", {"query": follow_up, "conversation_id": conversation_id}),
            ("POST", "/chat", {"conversation_id": conversation_id,
                               "messages": [{"role": "user", "content": follow_up}]}),
            ("POST", "/v1/chat/completions", {"model": "rag", "conversation_id": conversation_id,
                                              "messages": [{"role": "user", "content": follow_up}]})]


def test_no_answer_or_conversation_leaks_across_users(world: World) -> None:
    """Each user asks for each document they can read, in a new conversation; every other user (admins may read
    answer records) gets a 404 on the answer, its feedback and the conversation, and never its text."""
    checked = 0
    for owner in (u.username for u in DEFAULT_USERS if u.role != "admin"):
        for doc in (d for d in world.docs if world.visible(owner, d)):
            asked = world.client.post("/query", headers=world.headers(owner), json={
                "query": doc.canary, "mode": "rag", "conversation_id": "new"}).json()
            assert doc.canary in json.dumps(asked["citations"]) or doc.canary in asked["answer"]
            for other in (u.username for u in DEFAULT_USERS if u.username != owner):
                for method, path, body in foreign_requests(asked["answer_id"], asked["conversation_id"]):
                    response = world.client.request(method, path, headers=world.headers(other), json=body)
                    admin_read = other == "admin" and path.startswith("/answers/")
                    assert response.status_code == (200 if admin_read else 404), f"{other} {method} {path}"
                    if not admin_read:
                        assert doc.canary not in response.text and doc.doc_id not in response.text
                    checked += 1
            listed = world.client.get("/conversations", headers=world.headers(owner)).json()
            assert asked["conversation_id"] in {c["conversation_id"] for c in listed}
    print(f"\nanswer/conversation isolation: {checked} foreign requests")
    assert checked >= 8 * 5 * 5


# ---- governance: sensitivity labels and PII masking on the same probes ----
@dataclass(frozen=True)
class GovDoc:
    """A canary chunk labelled by the real enricher; ``pii`` must never reach a non-admin who does not own it."""

    name: str
    owner: str
    visibility: str
    groups: tuple[str, ...]
    pii: str
    body: str

    @property
    def canary(self) -> str:
        return f"canary{self.name.replace('_', '')}x"


GOV_DOCS = (
    GovDoc("restricted_public", "alice", "public", (), "900101-1234568", "직원 주민등록번호 {pii} 보관"),  # restricted
    GovDoc("confidential_eng", "system", "public", ("eng",), "ops.lead@example.com", "on-call contact {pii}"),
    GovDoc("internal_ip", "system", "public", (), "10.20.30.40", "the gateway at {pii} restarts tonight"),
)
GOV_FILTERS: list[Any] = [None, {"sensitivity": "restricted"},
                          [{"field": "pii_types", "op": "contains_any", "value": ["rrn", "email", "ip"]}],
                          {"owner_id": '") or true or ("'}]


def governed_world(world: World, settings: Any) -> World:
    """``world`` plus the labelled canaries, served by an app whose retrieval enforces the default policy."""
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from rag_ray.api.app import create_app
    from rag_ray.embedding.fake import FakeEmbedder
    from rag_ray.enrich import Enricher, GovernancePolicy
    from rag_ray.types import Acl, Chunk, make_chunk_id, sha256_text
    from tests.access_fixtures import make_services

    enricher, chunks = Enricher("standard"), []
    for doc in GOV_DOCS:
        text = f"quarterly report {doc.canary}: " + doc.body.format(pii=doc.pii)
        acl = Acl(world.user_ids.get(doc.owner, doc.owner), doc.groups, doc.visibility)  # type: ignore[arg-type]
        chunks.append(Chunk(make_chunk_id(f"doc-{doc.name}", 0, sha256_text(text)), f"doc-{doc.name}",
                            f"file:///{doc.name}.txt", 0, text, sha256_text(text),
                            enricher.enrich_metadata(text, {"title": doc.name}), acl))
    world.store.upsert(chunks, FakeEmbedder().embed([c.text for c in chunks]))
    world.store.flush()
    services = make_services(settings, world.db, world.store)
    services.retrieval.policy = GovernancePolicy()
    return replace(world, client=TestClient(create_app(services)), auth=services.auth)  # type: ignore[arg-type]


def gov_readable(world: World, username: str, doc: GovDoc, sensitivity: str) -> bool:
    """The reference model: the ACL, then the policy by sensitivity (restricted: owner; confidential: + groups)."""
    from tests.access_fixtures import reference_visible

    p, owner = world.principal(username), world.user_ids.get(doc.owner, doc.owner)
    if not reference_visible(p, owner, doc.groups, doc.visibility):
        return False
    if p.is_admin or owner == p.user_id or sensitivity not in ("restricted", "confidential"):
        return True
    return sensitivity == "confidential" and bool(set(doc.groups) & set(p.group_ids))


def gov_leaks(world: World, username: str, text: str, labels: dict[str, str]) -> list[str]:
    p = world.principal(username)
    found = []
    for doc in GOV_DOCS:
        if doc.canary in text and not gov_readable(world, username, doc, labels[doc.name]):
            found.append(f"{doc.name} (canary)")
        owner = world.user_ids.get(doc.owner, doc.owner)
        if doc.pii in text and not (p.is_admin or owner == p.user_id):
            found.append(f"{doc.name} (unmasked {doc.pii})")
    return found


def test_no_restricted_or_unmasked_pii_on_any_retrieval_path(world: World, make_settings: Any) -> None:
    gworld = governed_world(world, make_settings())
    labels = {r["doc_id"][4:]: r["sensitivity"] for r in world.store.query('doc_id like "doc-%"',
                                                                             ("id", "doc_id", "sensitivity"))}
    assert [labels[d.name] for d in GOV_DOCS] == ["restricted", "confidential", "internal"]
    queries = [(GENERIC_QUERY, f) for f in GOV_FILTERS] + [(d.canary, None) for d in GOV_DOCS]
    tally, failures = Tally(), []
    with gworld.client:
        for probe in (p for p in PROBES if route_exists(gworld, p)):
            for spec in DEFAULT_USERS:
                for query, filters in distinct(probe, queries):
                    response = send(gworld, probe, spec.username, query, filters)
                    where = f"{probe.name} as {spec.username} q={query!r} f={filters!r} [{response.status_code}]"
                    shown = response.text.replace(query, "")
                    tally.record(gov_leaks(gworld, spec.username, shown, labels), where, failures)
        sparse = next(p for p in PROBES if p.name == "query search sparse")
        admin = send(gworld, sparse, "admin", GENERIC_QUERY, None).text  # every canary, unmasked
        alice = send(gworld, sparse, "alice", GOV_DOCS[0].canary, None).text
    print(f"\ngovernance leak suite: probes={tally.probes} leaks={tally.leaks}")
    assert not failures, "\n".join(failures[:20])
    assert all(d.pii in admin for d in GOV_DOCS), "admins see every canary unmasked (the suite is not vacuous)"
    assert GOV_DOCS[0].pii in alice, "the owner sees her own PII"
    assert tally.probes >= len(DEFAULT_USERS) * len(queries) * 6
