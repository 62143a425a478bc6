"""User filters are checked against each field's type before any expression is built (422 naming the field), and
store errors reach the client without the filter expression or the driver's message (a reference instead).

Driven through HTTP on every route that takes filters, with real SQLite and Milvus Lite.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.errors import InvalidInput, StoreError
from rag_ray.store.filters import INT64_MAX, INT64_MIN
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Chunk, make_chunk_id, sha256_text
from tests.api_helpers import ApiRig, build_rig

Body = Callable[[Any], dict[str, Any]]

# route → body carrying ``filters`` (generate/rag takes the {field: value} shorthand only)
ROUTES: dict[str, tuple[str, Body, bool]] = {
    "query search dense": ("/query", lambda f: {"query": "report", "mode": "search", "search_strategy": "dense",
                                                "filters": f}, True),
    "query search sparse": ("/query", lambda f: {"query": "report", "mode": "search", "search_strategy": "sparse",
                                                 "filters": f}, True),
    "query search hybrid": ("/query", lambda f: {"query": "report", "mode": "search", "search_strategy": "hybrid",
                                                 "filters": f}, True),
    "query rag": ("/query", lambda f: {"query": "report", "mode": "rag", "filters": f}, True),
    "generate rag": ("/generate/rag", lambda f: {"query": "report", "generation_config": {"mode": "single"},
                                                 "retrieval_config": {"k": 5, "filters": f}}, False),
}

# (filters, the field the 422 must name)
BAD_FILTERS: list[tuple[Any, str]] = [
    ({"chunk_index": "abc"}, "filters.chunk_index"),
    ({"chunk_index": 2**63}, "filters.chunk_index"),
    ({"chunk_index": 10**30}, "filters.chunk_index"),
    ({"chunk_index": -(2**63) - 1}, "filters.chunk_index"),
    ({"chunk_index": 1.5}, "filters.chunk_index"),
    ({"chunk_index": True}, "filters.chunk_index"),
    ({"chunk_index": [1]}, "filters.chunk_index"),
    ({"chunk_index": None}, "filters.chunk_index"),
    ({"owner_id": True}, "filters.owner_id"),
    ({"owner_id": 5}, "filters.owner_id"),
    ({"owner_id": ["u-alice"]}, "filters.owner_id"),
    ({"owner_id": {"$ne": "nobody"}}, "filters.owner_id"),
    ({"visibility": 1.0}, "filters.visibility"),
    ({"doc_id": "d" * 65}, "filters.doc_id"),
    ({"owner_id": "o" * 129}, "filters.owner_id"),
    ({"title": "t" * 1025}, "filters.title"),
    ({"language": 5}, "filters.language"),
    ({"owner_id": "\ud800"}, "filters.owner_id"),
    ({"owner_id": "nul\x00"}, "filters.owner_id"),
    ({"group_ids": "g-team"}, "filters.group_ids"),  # array field: eq is not an array op
    ([{"field": "group_ids", "op": "contains", "value": 5}], "filters.group_ids"),
    ([{"field": "group_ids", "op": "contains_any", "value": ["g-team", 1]}], "filters.group_ids"),
    ([{"field": "group_ids", "op": "contains_any", "value": ["g" * 129]}], "filters.group_ids"),
    ([{"field": "pii_types", "op": "contains_any", "value": []}], "filters.pii_types"),
    ([{"field": "compliance_tags", "op": "contains", "value": ["a"]}], "filters.compliance_tags"),
    ([{"field": "chunk_index", "op": "prefix", "value": "a"}], "filters.chunk_index"),
    ([{"field": "chunk_index", "op": "contains", "value": 1}], "filters.chunk_index"),
    ([{"field": "chunk_index", "op": "in", "value": [1, "a"]}], "filters.chunk_index"),
    ([{"field": "chunk_index", "op": "in", "value": [2**63]}], "filters.chunk_index"),
    ([{"field": "chunk_index", "op": "lt", "value": 1e308}], "filters.chunk_index"),
    ([{"field": "title", "op": "prefix", "value": 7}], "filters.title"),
    ([{"field": "owner_id", "op": "in", "value": "u-alice"}], "filters.owner_id"),
    ([{"field": "owner_id", "op": "in", "value": ["x"] * 257}], "filters.owner_id"),
    ([{"field": "owner_id", "op": 'eq" or true or "', "value": "x"}], "filters.owner_id"),
    ([{"field": "owner_id", "op": ["eq"], "value": "x"}], "filters[0]"),
    ([{"field": ["owner_id"], "value": "x"}], "filters[0]"),
    ({'chunk_index" or true or "': "x"}, "filters.field"),
]
# What the access expression of alice (u-alice, group g-team) and a store error would show.
INTERNALS = ("u-alice", "g-team", "owner_id ==", "array_contains", "visibility ==", "Milvus", "column")


def _chunks() -> list[Chunk]:
    rows = [("u-alice", "private", "alice quarterly report"), ("system", "public", "public quarterly report")]
    chunks = []
    for i, (owner, visibility, text) in enumerate(rows):
        chunks.append(Chunk(make_chunk_id("fv", i, sha256_text(text)), f"doc-{i}", f"mem://{i}", i, text,
                            sha256_text(text), {"title": f"title {i}", "language": "en"},
                            Acl(owner, (), visibility)))  # type: ignore[arg-type]
    return chunks


def post(rig: ApiRig, path: str, body: dict[str, Any]) -> Any:
    """As alice; JSON with ASCII escapes, so lone surrogates travel as sent (httpx would refuse them)."""
    return rig.client.post(path, content=json.dumps(body), headers={**rig.auth("alice"),
                                                                      "Content-Type": "application/json"})


@pytest.fixture
def rig(make_settings: Any, fake_store: ChunkStore) -> ApiRig:
    chunks = _chunks()
    fake_store.upsert(chunks, FakeEmbedder().embed([c.text for c in chunks]))
    fake_store.flush()
    return build_rig(make_settings(), fake_store)


@pytest.mark.parametrize("route", list(ROUTES))
def test_type_mismatched_filters_are_422_naming_the_field(rig: ApiRig, route: str) -> None:
    path, body, takes_lists = ROUTES[route]
    failures = []
    for filters, field in BAD_FILTERS:
        if not takes_lists and not isinstance(filters, dict):
            continue
        response = post(rig, path, body(filters))
        leaked = [marker for marker in INTERNALS if marker in response.text]
        if response.status_code != 422 or response.json().get("field") != field or leaked:
            failures.append(f"{str(filters)[:80]} → {response.status_code} {response.text[:200]} leaked={leaked}")
    assert not failures, "\n".join(failures)


GOOD_FILTERS: list[tuple[Any, set[int]]] = [  # (filters, chunk indexes alice gets back)
    ({"chunk_index": 0}, {0}),
    ({"chunk_index": INT64_MIN}, set()),
    ([{"field": "chunk_index", "op": "in", "value": [1, INT64_MAX]}], {1}),
    ([{"field": "chunk_index", "op": "gte", "value": INT64_MIN}], {0, 1}),
    ({"title": "title 1"}, {1}),
    ({"title": "t" * 1024}, set()),
    ({"owner_id": "o" * 128}, set()),
    ([{"field": "title", "op": "prefix", "value": "title"}], {0, 1}),
    ([{"field": "title", "op": "prefix", "value": "title\\"}], set()),
    ([{"field": "language", "op": "in", "value": ["en", "ko"]}], {0, 1}),
    ([{"field": "language", "op": "not_in", "value": ["ko"]}], {0, 1}),
    ([{"field": "language", "op": "not_in", "value": ["ko", "en"]}], set()),
    ([{"field": "title", "op": "lt", "value": "title 1"}], {0}),
    ([{"field": "group_ids", "op": "contains_any", "value": ["g-team"]}], set()),
    ([{"field": "owner_id", "op": "in", "value": ['") or true or ("', "u-alice"]}], {0}),
]


def test_well_typed_filters_still_filter(rig: ApiRig) -> None:
    path, body, _ = ROUTES["query search dense"]
    for filters, expected in GOOD_FILTERS:
        response = post(rig, path, body(filters))
        assert response.status_code == 200, f"{filters}: {response.text}"
        assert {s["chunk_index"] for s in response.json()["sources"]} == expected, filters


# ---- store errors: nothing of the expression or the driver reaches the client ----
def test_store_errors_carry_a_reference_not_the_expression(rig: ApiRig, caplog: pytest.LogCaptureFixture) -> None:
    rig.store.drop()  # every search now fails inside Milvus
    with caplog.at_level(logging.ERROR):
        response = rig.client.post("/query", headers=rig.auth("alice"),
                                   json={"query": "report", "mode": "search", "filters": {"title": "title 0"}})
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "store_error" and "field" not in body
    ref = body["details"]["error_id"]
    assert ref in body["message"]
    markers = (*INTERNALS, "title 0", "collection", rig.store.collection)
    leaked = [marker for marker in markers if marker in response.text]
    assert not leaked, f"{leaked} in {response.text}"
    logged = "\n".join(r.getMessage() for r in caplog.records if ref in r.getMessage())
    assert rig.store.collection in logged, "the server log keeps the driver's message under the same reference"


def test_an_expression_milvus_refuses_is_the_callers_input(fake_store: ChunkStore,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Validation keeps such expressions out; should one get through, it is a 422 without the expression."""
    expr = 'owner_id == "u-secret" and chunk_index like "a%"'
    with caplog.at_level(logging.WARNING), pytest.raises(InvalidInput) as info:
        fake_store.search(vector=FakeEmbedder().embed(["x"])[0], expr=expr)
    assert info.value.field == "filters" and "u-secret" not in info.value.message
    assert info.value.details["error_id"] in info.value.message
    with pytest.raises(InvalidInput):
        fake_store.query("owner_id == true")
    assert any(info.value.details["error_id"] in r.getMessage() and "u-secret" in r.getMessage()
               for r in caplog.records)


def test_store_failures_without_a_filter_stay_store_errors(fake_store: ChunkStore) -> None:
    fake_store.drop()
    with pytest.raises(StoreError) as info:
        fake_store.get(["x"])
    assert "error_id" in info.value.details and fake_store.collection not in info.value.message
