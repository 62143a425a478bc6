"""The audit log through HTTP: the full lifecycle of a user (created, grouped, promoted, keyed, signing in and out,
sharing, deleting, deactivated) leaves one event per step with actor, target, time and request id; ``GET
/admin/audit`` filters; the log is append-only (no route changes it, the database refuses to) and never holds a
secret; the CLI lists it and names its operator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from rag_ray.cli.main import app as cli_app
from rag_ray.metadata import MetadataDB
from rag_ray.store.milvus import ChunkStore
from tests.access_fixtures import DEFAULT_DOCS, PASSWORD, ingest_docs
from tests.guard_helpers import START, Rig, build_rig

pytest_plugins = ["tests.access_fixtures"]

CARL_PASSWORD = "carl-first-password-1"
WRONG = "carl-wrong-password-9"


@pytest.fixture
def rig(make_settings: Any, identity_db: MetadataDB, fake_store: ChunkStore) -> Iterator[Rig]:
    built = build_rig(make_settings(), identity_db, fake_store)
    ingest_docs(identity_db, fake_store, DEFAULT_DOCS[:3], built.user_ids)
    yield built
    built.close()


def call(rig: Rig, method: str, path: str, request_id: str, token: str | None = None, **kw: Any) -> Any:
    headers = {"X-Request-ID": request_id, **({"Authorization": f"Bearer {token}"} if token else {})}
    response = rig.client.request(method, path, headers=headers, **kw)
    assert response.status_code < 500, response.text
    return response


def events(rig: Rig, **params: Any) -> list[dict[str, Any]]:
    response = rig.client.get("/admin/audit", headers=rig.headers("admin"), params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return response.json()["events"]  # type: ignore[no-any-return]


def test_full_user_lifecycle_is_audited_without_secrets(rig: Rig, identity_db: MetadataDB) -> None:
    admin, admin_id = rig.token("admin"), rig.user_ids["admin"]
    carl = call(rig, "POST", "/admin/users", "req-create", admin,
                json={"username": "carl", "password": CARL_PASSWORD}).json()
    carl_id = carl["user_id"]
    call(rig, "POST", "/admin/groups", "req-group", admin, json={"name": "ops"})
    call(rig, "POST", "/admin/groups/ops/members", "req-join", admin, json={"user": "carl"})
    call(rig, "PATCH", "/admin/users/carl", "req-promote", admin, json={"role": "admin"})
    key = call(rig, "POST", "/admin/api-keys", "req-key", admin, json={"user": "carl", "name": "laptop"}).json()
    assert call(rig, "POST", "/auth/token", "req-wrong", json={"username": "carl", "password": WRONG}
                ).status_code == 401
    pair = call(rig, "POST", "/auth/token", "req-login", json={"username": "carl", "password": CARL_PASSWORD}).json()
    fresh = call(rig, "POST", "/auth/refresh", "req-refresh", json={"refresh_token": pair["refresh_token"]}).json()
    assert call(rig, "GET", "/auth/me", "req-key-use", key["key"]).status_code == 200
    doc = DEFAULT_DOCS[0].doc_id  # alice's private document
    assert call(rig, "GET", f"/documents/{doc}", "req-read", fresh["access_token"]).status_code == 200
    call(rig, "PUT", f"/documents/{doc}/acl", "req-share", fresh["access_token"],
         json={"visibility": "group", "group_ids": ["ops"]})
    assert call(rig, "DELETE", f"/documents/{DEFAULT_DOCS[1].doc_id}", "req-delete", fresh["access_token"]
                ).status_code == 200
    call(rig, "POST", "/auth/logout", "req-logout", fresh["access_token"], json={"refresh_token":
                                                                                 fresh["refresh_token"]})
    call(rig, "DELETE", f"/admin/api-keys/{key['key_id']}", "req-revoke", admin)
    call(rig, "PATCH", "/admin/users/carl", "req-demote", admin, json={"role": "user"})
    call(rig, "DELETE", "/admin/groups/ops/members/carl", "req-leave", admin)
    call(rig, "PATCH", "/admin/users/carl", "req-deactivate", admin, json={"active": False})

    about_carl = [e for e in reversed(events(rig, target=carl_id))]
    steps = [(e["action"], e["outcome"], e["actor_id"], e["request_id"]) for e in about_carl]
    assert steps == [
        ("user.create", "success", admin_id, "req-create"),
        ("membership.add", "success", admin_id, "req-join"),
        ("user.role_change", "success", admin_id, "req-promote"),
        ("auth.login", "failure", None, "req-wrong"),
        ("auth.login", "success", carl_id, "req-login"),
        ("auth.refresh", "success", carl_id, "req-refresh"),
        ("auth.revoke", "success", carl_id, "req-logout"),
        ("auth.revoke", "success", carl_id, "req-logout"),
        ("user.role_change", "success", admin_id, "req-demote"),
        ("membership.remove", "success", admin_id, "req-leave"),
        ("user.deactivate", "success", admin_id, "req-deactivate"),
    ]
    assert about_carl[2]["details"] == {"username": "carl", "from": "user", "to": "admin"}
    assert about_carl[3]["details"] == {"username": "carl", "reason": "wrong_password"}
    assert [e["details"]["kind"] for e in about_carl if e["action"] == "auth.revoke"] == ["access", "refresh"]
    assert {e["address"] for e in about_carl} == {"testclient"}
    assert all(datetime.fromisoformat(e["at"]) == datetime.fromtimestamp(START, UTC)
               for e in about_carl if e["action"].startswith("auth."))  # the injected clock

    by_carl = {e["action"]: e for e in events(rig, actor=carl_id)}
    assert by_carl["document.read"]["target_id"] == doc and by_carl["document.read"]["request_id"] == "req-read"
    assert by_carl["document.read"]["details"] == {"owner_id": rig.user_ids["alice"]}
    share = by_carl["document.acl_change"]
    assert share["details"]["before"]["visibility"] == "private" and share["details"]["after"] == {
        "owner_id": rig.user_ids["alice"], "group_ids": ["ops"], "visibility": "group"}
    assert by_carl["document.delete"]["target_id"] == DEFAULT_DOCS[1].doc_id
    key_events = events(rig, target=key["key_id"])
    assert [(e["action"], e["actor_id"], e["request_id"]) for e in reversed(key_events)] == [
        ("api_key.create", admin_id, "req-key"), ("api_key.revoke", admin_id, "req-revoke")]
    assert next(e["target_id"] for e in events(rig, action="group.create")) == "ops"  # the fixture made the rest

    # filters: action prefix, time window, limit
    user_events = events(rig, action="user.")
    assert user_events and all(e["action"].startswith("user.") for e in user_events)
    assert events(rig, since="2027-01-16T00:00:00Z", action="auth.") == []
    assert len(events(rig, limit=3)) == 3

    # never a secret: passwords, tokens, the API key, password hashes
    with identity_db.engine.connect() as conn:
        stored = json.dumps([list(map(str, row)) for row in conn.execute(sa.text("SELECT * FROM audit_events"))])
    shown = json.dumps(events(rig))
    secrets = [PASSWORD, CARL_PASSWORD, WRONG, pair["access_token"], pair["refresh_token"], fresh["access_token"],
               fresh["refresh_token"], key["key"], "$argon2"]
    for text in (stored, shown):
        assert not [s for s in secrets if s in text]


def test_the_log_is_append_only_and_admin_only(rig: Rig, identity_db: MetadataDB) -> None:
    paths = rig.client.app.openapi()["paths"]  # type: ignore[attr-defined]
    assert set(paths["/admin/audit"]) == {"get"}
    assert not [p for p in paths if p.startswith("/admin/audit/")]
    assert rig.client.post("/admin/users/alice/unlock", headers=rig.headers("admin")).status_code == 200
    for statement in ("UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(sa.exc.DBAPIError), identity_db.engine.begin() as conn:
            conn.execute(sa.text(statement))
    assert events(rig, action="auth.unlock")

    denied = rig.client.get("/admin/audit", headers=rig.headers("bob"))
    assert denied.status_code == 403
    knock = events(rig, action="access.denied")[0]
    assert (knock["actor_id"], knock["target_id"], knock["outcome"]) == (rig.user_ids["bob"], "/admin/audit",
                                                                         "denied")


def test_cli_changes_are_audited_with_the_operator_and_listed(rig: Rig, make_settings: Any) -> None:
    settings = make_settings()
    env = {"DATABASE_URL": rig.db.url, "RAG_DATA_DIR": str(settings.data_dir), "SECRET_KEY": "x" * 40,
           "RAG_LOG_FILE": "false"}
    runner = CliRunner()
    made = runner.invoke(cli_app, ["user", "create", "dora", "--password", "dora-password-1"], env=env)
    assert made.exit_code == 0, made.output
    assert runner.invoke(cli_app, ["user", "set-role", "dora", "viewer"], env=env).exit_code == 0
    listed = runner.invoke(cli_app, ["audit", "list", "--action", "user.", "--format", "json"], env=env)
    assert listed.exit_code == 0, listed.output
    dora = [e for e in json.loads(listed.output) if e["details"].get("username") == "dora"]
    assert [e["action"] for e in dora] == ["user.role_change", "user.create"]
    assert all(e["actor_name"].startswith("cli:") and e["actor_id"] is None for e in dora)
    table = runner.invoke(cli_app, ["audit", "list", "--target", dora[0]["target_id"]], env=env)
    assert table.exit_code == 0 and "Audit" in table.output
