"""`rag-cli user ...` and `rag-cli database init|test|status` through typer's CliRunner."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from rag_ray.access.service import AuthService
from rag_ray.cli import database, user
from rag_ray.cli.context import CliContext
from rag_ray.config import Settings
from rag_ray.metadata import MetadataDB

runner = CliRunner()


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    return make_settings(admin_password=None)  # type: ignore[no-any-return]


def run(app: Any, settings: Settings, *args: str, input: str | None = None) -> Any:
    result = runner.invoke(app, list(args), obj=CliContext(settings=settings), input=input)
    return result


def test_init_bootstraps_admin_and_prints_password_once(settings: Settings, caplog: Any) -> None:
    first = run(database.app, settings, "init")
    assert first.exit_code == 0, first.output
    password = first.output.strip().splitlines()[-1]
    assert len(password) >= 20
    assert password not in caplog.text
    again = run(database.app, settings, "init")
    assert again.exit_code == 0 and password not in again.output
    db = MetadataDB(settings.metadata_url)
    assert AuthService(db, settings).login("admin", password).access_token
    db.dispose()


def test_user_create_list_and_groups(settings: Settings) -> None:
    assert run(user.app, settings, "create", "alice", "--email", "a@example.com", "--password", "pw-alice-123"
               ).exit_code == 0
    prompted = run(user.app, settings, "create", "--username", "bob", "--role", "viewer",
                   input="pw-bob-1234\npw-bob-1234\n")
    assert prompted.exit_code == 0, prompted.output
    assert run(user.app, settings, "create", "root", "--password", "pw-root-123", "--role", "admin").exit_code == 0
    dup = run(user.app, settings, "create", "alice", "--password", "pw-alice-123")
    assert dup.exit_code == 1 and "already exists" in dup.output
    assert run(user.app, settings, "create", "x", "--password", "short").exit_code == 1

    assert run(user.app, settings, "group-create", "eng", "--description", "engineers").exit_code == 0
    assert run(user.app, settings, "group-add", "alice", "eng").exit_code == 0
    assert run(user.app, settings, "set-active", "bob", "--inactive").exit_code == 0

    listed = json.loads(run(user.app, settings, "list", "--format", "json").output)
    assert [u["username"] for u in listed] == ["alice", "bob", "root"]
    assert listed[0]["group_ids"] == ["eng"] and listed[0]["email"] == "a@example.com"
    admins = json.loads(run(user.app, settings, "list", "--role", "admin", "--format", "json").output)
    assert [u["username"] for u in admins] == ["root"]
    active = json.loads(run(user.app, settings, "list", "--active", "--format", "json").output)
    assert "bob" not in [u["username"] for u in active]
    inactive = json.loads(run(user.app, settings, "list", "--inactive", "--format", "json").output)
    assert [u["username"] for u in inactive] == ["bob"]
    table = run(user.app, settings, "list")
    assert table.exit_code == 0 and "alice" in table.output and "Users" in table.output

    assert run(user.app, settings, "group-remove", "alice", "eng").exit_code == 0
    assert run(user.app, settings, "group-remove", "alice", "eng").exit_code == 1
    groups = json.loads(run(user.app, settings, "group-list", "--format", "json").output)
    assert groups == [{"group_id": "eng", "name": "eng", "description": "engineers", "member_ids": [],
                       "member_count": 0}]


def test_api_key_is_printed_once_and_works(settings: Settings) -> None:
    run(user.app, settings, "create", "alice", "--password", "pw-alice-123")
    result = run(user.app, settings, "api-key", "alice", "--name", "ci")
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    db = MetadataDB(settings.metadata_url)
    assert AuthService(db, settings).authenticate(key).username == "alice"
    db.dispose()
    assert run(user.app, settings, "api-key", "nobody").exit_code == 1


def test_database_test_and_status(settings: Settings) -> None:
    run(database.app, settings, "init")
    tested = run(database.app, settings, "test")
    assert tested.exit_code == 0 and "sqlite" in tested.output
    status = json.loads(run(database.app, settings, "status", "--format", "json").output)
    assert status["revision"] >= "0002"  # later migrations may follow
    assert status["tables"]["users"] == 1 and status["chunks"] == 0


def test_database_test_masks_the_password(make_settings: Any) -> None:
    settings = make_settings(database_url="postgresql+psycopg://u:hunter2secret@127.0.0.1:1/nodb")
    result = run(database.app, settings, "test")
    assert result.exit_code == 1 and "hunter2secret" not in result.output and "***" in result.output
