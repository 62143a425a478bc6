"""Sharing over HTTP: ACL changes and membership changes take effect on the caller's next request."""

from __future__ import annotations

from typing import Any

from rag_ray.metadata import DocumentRecord
from rag_ray.store.filters import user_filter
from tests.access_fixtures import World

pytest_plugins = ["tests.access_fixtures"]


def visible_docs(world: World, username: str, query: str = "quarterly report secret code") -> set[str]:
    body = {"query": query, "mode": "search", "k": 50, "search_strategy": "dense"}
    response = world.client.post("/query", headers=world.headers(username), json=body)
    assert response.status_code == 200, response.text
    return {hit["doc_id"] for hit in response.json()["sources"]}


def put_acl(world: World, username: str, doc_id: str, **body: Any) -> Any:
    return world.client.put(f"/documents/{doc_id}/acl", headers=world.headers(username), json=body)


def test_sharing_with_a_group_is_visible_on_next_request(world: World) -> None:
    assert "doc-bob_sales" not in visible_docs(world, "alice")
    response = put_acl(world, "bob", "doc-bob_sales", group_ids=["sales", "eng"], visibility="group")
    assert response.status_code == 200, response.text
    assert response.json()["chunks_updated"] == 2
    assert "doc-bob_sales" in visible_docs(world, "alice")
    rows = world.store.query(user_filter({"doc_id": "doc-bob_sales"}), ("id", "group_ids", "visibility", "text"))
    assert all(sorted(r["group_ids"]) == ["eng", "sales"] and r["visibility"] == "group" for r in rows)
    assert all("canarybobsalesx" in r["text"] for r in rows)  # the rest of the row survived the upsert
    with world.db.session() as s:
        record = s.get(DocumentRecord, "doc-bob_sales")
        assert record is not None and sorted(record.group_ids) == ["eng", "sales"]


def test_removing_a_member_hides_group_documents_on_next_request(world: World) -> None:
    assert "doc-alice_eng" in visible_docs(world, "bob")
    response = world.client.delete(f"/admin/groups/eng/members/{world.user_ids['bob']}",
                                   headers=world.headers("admin"))
    assert response.status_code == 200, response.text
    assert "doc-alice_eng" not in visible_docs(world, "bob")  # same token, next request
    assert world.client.post("/admin/groups/eng/members", headers=world.headers("admin"),
                             json={"user": "bob"}).status_code == 200
    assert "doc-alice_eng" in visible_docs(world, "bob")


def test_making_private_and_public(world: World) -> None:
    assert put_acl(world, "alice", "doc-alice_eng", visibility="private").status_code == 200
    assert "doc-alice_eng" not in visible_docs(world, "bob")
    assert put_acl(world, "alice", "doc-alice_eng", visibility="public").status_code == 200
    assert "doc-alice_eng" in visible_docs(world, "dave")


def _without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    """An error body minus ``details.request_id`` (each response has its own)."""
    details = {k: v for k, v in body.get("details", {}).items() if k != "request_id"}
    return {k: v for k, v in body.items() if k != "details"} | ({"details": details} if details else {})


def test_others_documents_answer_404_like_missing_ones(world: World) -> None:
    missing = put_acl(world, "carol", "doc-does-not-exist", visibility="public")
    for username, doc_id in (("carol", "doc-alice_private"), ("dave", "doc-public_memo"),
                             ("alice", "doc-bob_sales"), ("bob", "doc-alice_eng")):
        response = put_acl(world, username, doc_id, visibility="public")
        assert response.status_code == missing.status_code == 404
        assert _without_request_id(response.json()) == {**_without_request_id(missing.json()),
                                                         "message": missing.json()["message"].replace(
                                                             "doc-does-not-exist", doc_id)}
    assert "doc-alice_private" not in visible_docs(world, "carol")


def test_admin_may_change_any_acl_and_hand_over(world: World) -> None:
    response = put_acl(world, "admin", "doc-system_private", visibility="private", owner_id=world.user_ids["dave"])
    assert response.status_code == 200, response.text
    assert "doc-system_private" in visible_docs(world, "dave")


def test_owner_cannot_hand_over_and_unknown_groups_are_rejected(world: World) -> None:
    response = put_acl(world, "alice", "doc-alice_private", visibility="private", owner_id=world.user_ids["bob"])
    assert response.status_code == 200 and response.json()["owner_id"] == world.user_ids["alice"]
    bad = put_acl(world, "alice", "doc-alice_private", visibility="group", group_ids=["no-such-group"])
    assert bad.status_code == 422 and bad.json()["field"] == "group_ids"
    assert put_acl(world, "alice", "doc-alice_private", visibility="everyone").status_code == 422
