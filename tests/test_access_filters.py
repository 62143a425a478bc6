"""Filter injection: exact rendered expressions for hostile values, executed against real Milvus Lite,
plus a property test comparing ``retrieval_filter`` in Milvus with a Python reference model of the ACL."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.errors import InvalidInput
from rag_ray.retrieval.filters import retrieval_filter
from rag_ray.store.filters import INT64_MIN, MAX_IN_VALUES, access_filter, group_key, user_filter
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Chunk, Principal, make_chunk_id, sha256_text
from tests.access_fixtures import reference_visible

HOSTILE = [
    '") or true or ("',
    'x" || owner_id != "y',
    "trailing\\",
    "line\nbreak",
    "tab\tand\rreturn",
    "“alice”",
    "”alice“",
    "＂alice＂",
    "it's",
    "' or '1'=='1",
    "alice\\\" or true or \\\"",
    'array_contains_any(group_ids, ["eng"])',
    "%",
    "_",
    "e_g",
    "en%",
    "a|b",
    "",
]
PLAIN = ["alice", "bob", "eng", "engineering", "ng", "a", "b", "sales", "y", "x"]

EXPECTED_RENDERINGS = {
    '") or true or ("': 'owner_id == "\\") or true or (\\"" or visibility == "public" or (visibility == "group" '
                        'and array_contains_any(group_ids, ["\\") or true or (\\""]))',
    'x" || owner_id != "y': 'owner_id == "x\\" || owner_id != \\"y" or visibility == "public" or (visibility == '
                            '"group" and array_contains_any(group_ids, ["x\\" || owner_id != \\"y"]))',
    "trailing\\": 'owner_id == "trailing\\\\" or visibility == "public" or (visibility == "group" and '
                  'array_contains_any(group_ids, ["trailing\\\\"]))',
    "line\nbreak": 'owner_id == "line\\nbreak" or visibility == "public" or (visibility == "group" and '
                   'array_contains_any(group_ids, ["line\\nbreak"]))',
    "“alice”": 'owner_id == "“alice”" or visibility == "public" or (visibility == "group" and '
               'array_contains_any(group_ids, ["“alice”"]))',
    "＂alice＂": 'owner_id == "＂alice＂" or visibility == "public" or (visibility == "group" and '
                 'array_contains_any(group_ids, ["＂alice＂"]))',
}


@pytest.mark.parametrize("value", list(EXPECTED_RENDERINGS))
def test_access_filter_renders_hostile_values_as_one_literal(value: str) -> None:
    """On collections from before ``group_key`` (and Milvus 2.3) groups are matched on the array, as literals."""
    assert access_filter(Principal(value, group_ids=(value,)), keyed_groups=False) == EXPECTED_RENDERINGS[value]


def test_group_key_matching_renders_hex_tokens_only() -> None:
    """Group ids reach the expression as hex between separators: no quote, wildcard or separator of theirs."""
    hostile = Principal("bob", group_ids=('") or true or ("', "%", "a|b", "_"))
    assert access_filter(hostile) == (
        'owner_id == "bob" or visibility == "public" or (visibility == "group" and '
        '(group_key like "%|2229206f722074727565206f72202822|%" or group_key like "%|25|%" or '
        'group_key like "%|617c62|%" or group_key like "%|5f|%"))')
    assert group_key(["eng", "a|b"]) == "|656e67|617c62|" and group_key([]) == ""
    with pytest.raises(InvalidInput) as info:
        access_filter(Principal("bob", group_ids=("bell\x07",)))
    assert info.value.field == "filters.value"
    with pytest.raises(InvalidInput):
        access_filter(Principal("bob", group_ids=tuple(f"g{i}" for i in range(MAX_IN_VALUES + 1))))


def test_user_filter_and_prefix_renderings() -> None:
    assert user_filter({"owner_id": 'x" || owner_id != "y'}) == '(owner_id == "x\\" || owner_id != \\"y")'
    assert retrieval_filter(Principal("bob"), [{"field": "title", "op": "prefix", "value": '50%_"'}]) == (
        '(owner_id == "bob" or visibility == "public") and ((metadata["title"] like "50\\\\%\\\\_\\"%"))')
    assert retrieval_filter(Principal("root", role="admin"), {"visibility": "private"}) == (
        '((visibility == "private"))')


@pytest.mark.parametrize("value", ["nul\x00byte", "bell\x07", "esc\x1b[0m", "del\x7f"])
def test_control_characters_are_rejected(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        access_filter(Principal(value))
    assert info.value.field == "filters.value"
    with pytest.raises(InvalidInput):
        user_filter({"owner_id": value})


def test_unknown_fields_and_raw_text_are_rejected() -> None:
    for bad in ({"id or true": 1}, [{"field": "owner_id", "op": "or", "value": "x"}], "owner_id != ''"):
        with pytest.raises(InvalidInput):
            user_filter(bad)


TYPE_CONFUSED: list[tuple[Any, str]] = [  # injection through a value of the wrong type: refused, naming the field
    ({"owner_id": {"field": "owner_id", "op": "ne", "value": "x"}}, "filters.owner_id"),
    ({"owner_id": ['") or true or ("']}, "filters.owner_id"),
    ([{"field": "owner_id", "op": "in", "value": ['") or true or ("', 5]}], "filters.owner_id"),
    ([{"field": "chunk_index", "op": "in", "value": ["0] or true or chunk_index in [0"]}], "filters.chunk_index"),
    ([{"field": "chunk_index", "op": "eq", "value": "0 or true"}], "filters.chunk_index"),
    ([{"field": "chunk_index", "op": "eq", "value": 2**64}], "filters.chunk_index"),
    ([{"field": "chunk_index", "op": "prefix", "value": '") or true or ("'}], "filters.chunk_index"),
    ([{"field": "group_ids", "op": "contains_any", "value": [['eng"]) or true or (["']]}], "filters.group_ids"),
    ([{"field": "visibility", "op": "in", "value": [True]}], "filters.visibility"),
    ({"title": '\ud800") or true or ("'}, "filters.title"),
    ([{"field": "owner_id", "op": 'eq" or true or "', "value": "x"}], "filters.owner_id"),
    ([{"field": {"or": True}, "value": "x"}], "filters[0]"),
]


@pytest.mark.parametrize(("filters", "field"), TYPE_CONFUSED, ids=[str(f)[:40] for f, _ in TYPE_CONFUSED])
def test_type_confused_injections_are_refused_before_rendering(filters: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        retrieval_filter(Principal("bob"), filters)
    assert info.value.field == field


# ---- executed against real Milvus Lite ----
def _rows(store: ChunkStore, acls: Sequence[Acl]) -> dict[str, Acl]:
    """One chunk per ACL; returns chunk id → ACL."""
    chunks = []
    for i, acl in enumerate(acls):
        text = f"row {i} owned by someone"
        chunks.append(Chunk(make_chunk_id("filters", i, sha256_text(text)), f"d{i}", f"mem://{i}", i, text,
                            sha256_text(text), {}, acl))
    store.upsert(chunks, FakeEmbedder().embed([c.text for c in chunks]))
    store.flush()
    return {c.chunk_id: c.acl for c in chunks}


def _expected(rows: dict[str, Acl], p: Principal) -> set[str]:
    return {cid for cid, acl in rows.items() if reference_visible(p, acl.owner_id, acl.group_ids, acl.visibility)}


@pytest.mark.parametrize("keyed", [True, False], ids=["group_key", "group_ids array"])
def test_hostile_values_match_nothing_extra_in_milvus(fake_store: ChunkStore, keyed: bool) -> None:
    """Wildcards, separators, prefixes and substrings of other ids (``%``, ``e_g``, ``a|b``, ``eng`` in
    ``engineering``) match their own rows only, on both ways of matching groups."""
    names = HOSTILE + PLAIN
    acls = [Acl(n, (), "private") for n in names] + [Acl("nobody", (n,), "group") for n in names]
    rows = _rows(fake_store, acls)
    for value in names:
        principal = Principal(value, group_ids=(value,))
        got = fake_store.ids_where(access_filter(principal, keyed_groups=keyed))
        assert got == _expected(rows, principal), f"ACL for {value!r}"
        assert len(got) == 2, f"{value!r} must see exactly its own row and its group's row"
        owned = fake_store.ids_where(user_filter({"owner_id": value}))
        assert owned == {cid for cid, acl in rows.items() if acl.owner_id == value}


def test_hostile_user_filters_cannot_widen_the_access_filter(fake_store: ChunkStore) -> None:
    rows = _rows(fake_store, [Acl("alice", (), "private"), Acl("bob", (), "private"), Acl("carol", ("eng",), "group")])
    bob = Principal("bob")
    hostile_filters: list[Any] = [
        {"owner_id": '") or true or ("'}, {"owner_id": 'x" || owner_id != "y'}, {"owner_id": "alice"},
        [{"field": "owner_id", "op": "ne", "value": "bob"}], [{"field": "visibility", "op": "in",
                                                              "value": ["private", "group", "public"]}],
        [{"field": "group_ids", "op": "contains_any", "value": ["eng", '"] or true or ["']}],
        [{"field": "title", "op": "prefix", "value": '") or true or ("'}],
        [{"field": "owner_id", "op": "in", "value": ['") or true or ("', "alice"]}],
        [{"field": "owner_id", "op": "not_in", "value": ["bob"]}],
        [{"field": "chunk_index", "op": "gte", "value": INT64_MIN}],
        [{"field": "title", "op": "prefix", "value": '\\") or true or ("\\'}],
        [{"field": "group_ids", "op": "contains", "value": '") or true or ("'}],
        [{"field": "source", "op": "gt", "value": ""}],
    ]
    for filters in hostile_filters:
        got = fake_store.ids_where(retrieval_filter(bob, filters))
        assert got <= _expected(rows, bob), f"{filters!r} widened the access filter"


# ---- property test: Milvus vs the reference model ----
OWNERS = ["alice", "bob", "carol", "system", '") or true or ("', "“alice”", "trailing\\"]
GROUPS = ["eng", "engineering", "%", "e_g", "sales", "hr", 'x" || owner_id != "y', "＂eng＂", "e ng"]
VISIBILITIES = ["private", "group", "public"]
SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)


def _random_acls(n: int, seed: int = 7) -> list[Acl]:
    rng = random.Random(seed)
    return [Acl(rng.choice(OWNERS), tuple(rng.sample(GROUPS, rng.randint(0, 3))), rng.choice(VISIBILITIES))  # type: ignore[arg-type]
            for _ in range(n)]


principals = st.builds(
    Principal,
    user_id=st.one_of(st.sampled_from(OWNERS), SAFE_TEXT),
    username=st.just("p"),
    role=st.sampled_from(["user", "user", "viewer", "admin"]),
    group_ids=st.lists(st.one_of(st.sampled_from(GROUPS), SAFE_TEXT), max_size=4, unique=True).map(tuple),
)
user_filters = st.one_of(st.none(), st.builds(lambda v: {"visibility": v}, st.sampled_from(VISIBILITIES)),
                         st.builds(lambda o: {"owner_id": o}, st.sampled_from(OWNERS)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_milvus_matches_reference_acl(fake_store: ChunkStore, data: st.DataObject) -> None:
    if fake_store.count() == 0:
        _rows(fake_store, _random_acls(300))
    rows = {r["id"]: Acl(r["owner_id"], tuple(r["group_ids"]), r["visibility"])
            for r in fake_store.query("", ("id", "owner_id", "group_ids", "visibility"))}
    assert len(rows) == 300
    principal, filters, keyed = data.draw(principals), data.draw(user_filters), data.draw(st.booleans())
    expected = {cid for cid in _expected(rows, principal) if _passes(rows[cid], filters)}
    assert fake_store.ids_where(retrieval_filter(principal, filters, keyed_groups=keyed)) == expected


def _passes(acl: Acl, filters: dict[str, str] | None) -> bool:
    if not filters:
        return True
    if "visibility" in filters:
        return acl.visibility == filters["visibility"]
    return acl.owner_id == filters["owner_id"]
