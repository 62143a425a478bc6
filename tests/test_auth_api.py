"""The /auth and /admin routes over HTTP with the real AuthService (SQLite; PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rag_ray.access import users
from rag_ray.api.app import create_app
from rag_ray.metadata import MetadataDB
from tests.access_fixtures import PASSWORD, make_services

pytest_plugins = ["tests.access_fixtures"]


@pytest.fixture
def client(make_settings, identity_db: MetadataDB) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    users.create_user(identity_db, "root", PASSWORD, role="admin")
    users.create_user(identity_db, "alice", PASSWORD, email="alice@example.com")
    services = make_services(make_settings(), identity_db, None)  # type: ignore[arg-type]
    with TestClient(create_app(services)) as test_client:
        yield test_client


def login(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, Any]:
    response = client.post("/auth/token", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_login_json_and_oauth2_form(client: TestClient) -> None:
    pair = login(client, "alice")
    assert pair["token_type"] == "bearer" and pair["expires_in"] > 0 and pair["refresh_token"]
    form = client.post("/auth/token", data={"grant_type": "password", "username": "alice", "password": PASSWORD})
    assert form.status_code == 200 and form.json()["access_token"]
    me = client.get("/auth/me", headers=bearer(pair["access_token"])).json()
    assert me["username"] == "alice" and me["role"] == "user" and me["is_admin"] is False


@pytest.mark.parametrize("body", [{"username": "alice", "password": "wrong-password"},
                                  {"username": "nobody", "password": PASSWORD}])
def test_bad_credentials_are_401_with_one_message(client: TestClient, body: dict[str, str]) -> None:
    response = client.post("/auth/token", json=body)
    assert response.status_code == 401
    assert response.json()["message"] == "invalid username or password"
    assert response.headers["www-authenticate"] == "Bearer"


def test_login_validation(client: TestClient) -> None:
    assert client.post("/auth/token", json={"username": "alice"}).status_code == 422
    assert client.post("/auth/token", content=b"not json", headers={"content-type": "application/json"}
                       ).status_code == 422
    assert client.post("/auth/token", data={"grant_type": "client_credentials", "username": "alice",
                                            "password": PASSWORD}).status_code == 422


def test_refresh_rotates_and_refuses_replay(client: TestClient) -> None:
    pair = login(client, "alice")
    fresh = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert fresh.status_code == 200
    assert client.get("/auth/me", headers=bearer(fresh.json()["access_token"])).status_code == 200
    assert client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
    assert client.post("/auth/refresh", json={"refresh_token": pair["access_token"]}).status_code == 401


def test_logout_revokes_the_presented_token_only(client: TestClient) -> None:
    first, second = login(client, "alice"), login(client, "alice")
    assert client.post("/auth/logout", headers=bearer(first["access_token"])).status_code == 200
    assert client.get("/auth/me", headers=bearer(first["access_token"])).status_code == 401
    assert client.get("/auth/me", headers=bearer(second["access_token"])).status_code == 200


def test_admin_routes_need_admin(client: TestClient) -> None:
    alice = bearer(login(client, "alice")["access_token"])
    for method, path in (("GET", "/admin/users"), ("POST", "/admin/groups"), ("GET", "/admin/api-keys")):
        assert client.request(method, path, headers=alice, json={}).status_code == 403
    assert client.get("/admin/users").status_code == 401


def test_admin_user_lifecycle(client: TestClient) -> None:
    root = bearer(login(client, "root")["access_token"])
    created = client.post("/admin/users", headers=root, json={"username": "bob", "password": PASSWORD,
                                                               "role": "viewer"})
    assert created.status_code == 201 and created.json()["role"] == "viewer"
    assert "password" not in created.text and "hash" not in created.text
    assert client.post("/admin/users", headers=root, json={"username": "bob", "password": PASSWORD}
                       ).status_code == 409
    names = lambda **q: [u["username"] for u in client.get("/admin/users", headers=root,  # noqa: E731
                                                           params=q).json()["users"]]
    assert names() == ["alice", "bob", "root"] and names(role="viewer") == ["bob"]
    bob_token = login(client, "bob")["access_token"]
    patched = client.patch("/admin/users/bob", headers=root, json={"active": False, "role": "user"})
    assert patched.json()["active"] is False and patched.json()["role"] == "user"
    assert names(active="false") == ["bob"]
    assert client.get("/auth/me", headers=bearer(bob_token)).status_code == 401
    assert client.post("/auth/token", json={"username": "bob", "password": PASSWORD}).status_code == 401
    assert client.get("/admin/users/nobody", headers=root).status_code == 404
    assert client.patch("/admin/users/root", headers=root, json={"role": "user"}).status_code == 409  # last admin


def test_admin_groups_and_members(client: TestClient) -> None:
    root = bearer(login(client, "root")["access_token"])
    assert client.post("/admin/groups", headers=root, json={"name": "eng", "description": "engineers"}
                       ).status_code == 201
    alice_token = login(client, "alice")["access_token"]
    assert client.post("/admin/groups/eng/members", headers=root, json={"user": "alice"}).status_code == 200
    assert client.get("/auth/me", headers=bearer(alice_token)).json()["group_ids"] == ["eng"]
    groups = client.get("/admin/groups", headers=root).json()["groups"]
    assert groups[0]["group_id"] == "eng" and groups[0]["member_count"] == 1
    assert client.delete("/admin/groups/eng/members/alice", headers=root).status_code == 200
    assert client.get("/auth/me", headers=bearer(alice_token)).json()["group_ids"] == []
    assert client.delete("/admin/groups/eng/members/alice", headers=root).status_code == 404
    assert client.post("/admin/groups", headers=root, json={"name": "bad name!"}).status_code == 422


def test_api_keys(client: TestClient) -> None:
    root = bearer(login(client, "root")["access_token"])
    made = client.post("/admin/api-keys", headers=root, json={"user": "alice", "name": "ci"})
    assert made.status_code == 201
    key, key_id = made.json()["key"], made.json()["key_id"]
    assert key.startswith("rr_")
    assert client.get("/auth/me", headers=bearer(key)).json()["username"] == "alice"
    listed = client.get("/admin/api-keys", headers=root, params={"user": "alice"}).json()["api_keys"]
    assert [k["key_id"] for k in listed] == [key_id] and key not in str(listed)
    own = client.post("/admin/api-keys", headers=root, json={}).json()
    assert client.get("/auth/me", headers=bearer(own["key"])).json()["username"] == "root"
    assert client.delete(f"/admin/api-keys/{key_id}", headers=root).json()["revoked"] is True
    assert client.get("/auth/me", headers=bearer(key)).status_code == 401
    assert client.post("/auth/logout", headers=bearer(own["key"])).status_code == 200
    assert client.get("/auth/me", headers=bearer(own["key"])).status_code == 401


def test_api_key_of_deactivated_user_is_rejected(client: TestClient, identity_db: MetadataDB) -> None:
    key = users.create_api_key(identity_db, "alice").key
    assert client.get("/auth/me", headers=bearer(key)).status_code == 200
    users.set_active(identity_db, "alice", False)
    assert client.get("/auth/me", headers=bearer(key)).status_code == 401
