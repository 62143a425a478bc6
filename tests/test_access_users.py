"""Users, groups, API keys, passwords, bootstrap and the key ring (SQLite; PostgreSQL when configured)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import inspect

from rag_ray.access import users
from rag_ray.access.bootstrap import bootstrap_admin
from rag_ray.access.passwords import hash_password, verify_password
from rag_ray.access.service import AuthService
from rag_ray.access.tokens import KeyRing, SigningKey
from rag_ray.errors import AuthenticationError, ConfigError, Conflict, InvalidInput, NotFound
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import ApiKey
from tests.access_fixtures import PASSWORD

pytest_plugins = ["tests.access_fixtures"]


def test_identity_tables_exist(identity_db: MetadataDB) -> None:
    tables = set(inspect(identity_db.engine).get_table_names())
    assert {"users", "groups", "memberships", "api_keys", "revoked_tokens"} <= tables


def test_passwords_are_argon2id() -> None:
    hashed = hash_password("a long passphrase")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "a long passphrase") and not verify_password(hashed, "a long passphrasE")
    assert not verify_password(None, "anything") and not verify_password("garbage", "anything")
    with pytest.raises(InvalidInput) as info:
        hash_password("short")
    assert info.value.field == "password"


def test_a_server_hashes_with_the_rfc_9106_low_memory_profile() -> None:
    """This test process hashes with argon2's cheapest parameters (conftest); a fresh process has the default."""
    import subprocess
    import sys

    from argon2 import extract_parameters
    from argon2.profiles import RFC_9106_LOW_MEMORY

    code = "from rag_ray.access.passwords import hash_password; print(hash_password('a long passphrase'))"
    hashed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert extract_parameters(hashed) == RFC_9106_LOW_MEMORY
    assert verify_password(hashed, "a long passphrase")  # whatever this process hashes with


def test_users_roles_and_filters(identity_db: MetadataDB) -> None:
    root = users.create_user(identity_db, "root", PASSWORD, role="admin")
    users.create_user(identity_db, "alice", PASSWORD)
    users.create_user(identity_db, "vic", PASSWORD, role="viewer", active=False)
    assert [u.username for u in users.list_users(identity_db, role="viewer")] == ["vic"]
    assert [u.username for u in users.list_users(identity_db, active=True)] == ["alice", "root"]
    assert users.get_user(identity_db, root.user_id).username == "root"
    for bad in ({"username": "has space"}, {"username": "ok", "role": "superuser"}):
        with pytest.raises(InvalidInput):
            users.create_user(identity_db, bad["username"], PASSWORD, role=bad.get("role", "user"))
    with pytest.raises(Conflict):
        users.create_user(identity_db, "alice", PASSWORD)
    with pytest.raises(Conflict):
        users.set_role(identity_db, "root", "user")  # the last admin
    with pytest.raises(Conflict):
        users.set_active(identity_db, "root", False)
    users.set_role(identity_db, "alice", "admin")
    assert users.set_active(identity_db, "root", False).active is False
    with pytest.raises(NotFound):
        users.get_user(identity_db, "nobody")


def test_groups_by_name_or_id(identity_db: MetadataDB) -> None:
    users.create_user(identity_db, "alice", PASSWORD)
    eng = users.create_group(identity_db, "Engineering", group_id="eng")
    assert eng.group_id == "eng"
    users.add_member(identity_db, "alice", "Engineering")
    users.add_member(identity_db, "alice", "eng")  # idempotent
    assert users.get_group(identity_db, "eng").member_ids == (users.get_user(identity_db, "alice").user_id,)
    assert users.resolve_group_ids(identity_db, ["Engineering", "eng"]) == ("eng",)
    with pytest.raises(InvalidInput) as info:
        users.resolve_group_ids(identity_db, ["nope"])
    assert info.value.field == "group_ids"
    with pytest.raises(Conflict):
        users.create_group(identity_db, "eng")  # clashes with the id
    users.remove_member(identity_db, "alice", "eng")
    assert users.get_user(identity_db, "alice").group_ids == ()


def test_api_keys_hashed_expiring_revocable(identity_db: MetadataDB, make_settings: Any) -> None:
    auth = AuthService(identity_db, make_settings())
    users.create_user(identity_db, "alice", PASSWORD)
    made = users.create_api_key(identity_db, "alice", name="ci", expires_days=1)
    with identity_db.session() as s:
        stored = s.get(ApiKey, made.info.key_id)
        assert stored is not None and made.key not in (stored.key_hash, stored.prefix)
    assert auth.authenticate(made.key).username == "alice"
    with identity_db.session() as s:
        record = s.get(ApiKey, made.info.key_id)
        assert record is not None
        record.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(AuthenticationError):
        auth.authenticate(made.key)
    other = users.create_api_key(identity_db, "alice")
    users.revoke_api_key(identity_db, other.info.key_id)
    with pytest.raises(AuthenticationError):
        auth.authenticate(other.key)
    assert [k.revoked for k in users.list_api_keys(identity_db, "alice")] == [False, True]


def test_bootstrap_from_configuration(identity_db: MetadataDB, make_settings: Any, caplog: Any) -> None:
    settings = make_settings(admin_username="boss", admin_password="configured-admin-pw")
    with caplog.at_level(logging.DEBUG):
        assert bootstrap_admin(settings, identity_db) is None
    assert "configured-admin-pw" not in caplog.text
    assert AuthService(identity_db, settings).login("boss", "configured-admin-pw").access_token
    assert bootstrap_admin(settings, identity_db) is None  # an admin exists


def test_bootstrap_generates_a_password_once(identity_db: MetadataDB, make_settings: Any, caplog: Any) -> None:
    settings = make_settings(admin_password=None)
    with caplog.at_level(logging.DEBUG):
        password = bootstrap_admin(settings, identity_db)
    assert password and len(password) >= 20 and password not in caplog.text
    assert AuthService(identity_db, settings).authenticate(
        AuthService(identity_db, settings).login("admin", password).access_token).is_admin
    assert bootstrap_admin(settings, identity_db) is None


def test_generated_secret_is_stable_across_services(identity_db: MetadataDB, make_settings: Any) -> None:
    settings = make_settings(secret_key=None)
    users.create_user(identity_db, "alice", PASSWORD)
    token = AuthService(identity_db, settings).login("alice", PASSWORD).access_token
    assert AuthService(identity_db, settings).authenticate(token).username == "alice"  # another replica
    assert (settings.resolved_data_dir / "secret.key").stat().st_mode & 0o077 == 0


def test_key_ring_configuration_errors() -> None:
    with pytest.raises(ConfigError):
        KeyRing([SigningKey.hmac("a", "s" * 32), SigningKey.hmac("a", "t" * 32)], "a")
    with pytest.raises(ConfigError):
        KeyRing([SigningKey.hmac("a", "s" * 32, can_sign=False)], "a")
    with pytest.raises(ConfigError):
        SigningKey.hmac("a", "s" * 32, algorithm="RS256")
    with pytest.raises(ConfigError):
        SigningKey("a", "none", "x")
