"""Rotating ``SECRET_KEY`` with ``RAG_RETIRED_SECRET_KEYS``, over HTTP through the production wiring.

Each "restart" is a new app built from new settings over the same metadata DB. While the old key is listed as
retired, access and refresh tokens signed with it keep working and named RDB sources encrypted with it stay
readable; new tokens are signed with the current key; a key dropped from the list is refused at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from rag_ray.access import users
from rag_ray.access.tokens import secret_kid
from rag_ray.api.app import create_app
from rag_ray.config import Settings
from rag_ray.errors import ConfigError
from rag_ray.metadata import MetadataDB
from rag_ray.sources.rdb.config import DatabaseConfig
from rag_ray.sources.rdb.state import NamedSource, add_source
from tests.access_fixtures import PASSWORD, make_services

pytest_plugins = ["tests.access_fixtures"]

KEY_A = "rotation-key-a-" + "a" * 40
KEY_B = "rotation-key-b-" + "b" * 40
SOURCE_URL = "postgresql://crm_reader:crm-pw-123@db.example:5432/crm"

Serve = Callable[..., Any]


@pytest.fixture
def serve(make_settings: Callable[..., Settings], identity_db: MetadataDB,
          monkeypatch: pytest.MonkeyPatch) -> Serve:
    """Start the app as an operator would: ``SECRET_KEY`` and ``RAG_RETIRED_SECRET_KEYS`` (comma separated)."""

    @contextmanager
    def start(secret: str, retired: tuple[str, ...] = ()) -> Iterator[TestClient]:
        monkeypatch.setenv("RAG_RETIRED_SECRET_KEYS", ",".join(retired))
        settings = make_settings(secret_key=secret)
        with TestClient(create_app(make_services(settings, identity_db, None))) as client:
            yield client

    return start


def login(client: TestClient, username: str = "alice") -> dict[str, str]:
    response = client.post("/auth/token", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def me(client: TestClient, token: str) -> int:
    return client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code


def refresh(client: TestClient, token: str) -> Any:
    return client.post("/auth/refresh", json={"refresh_token": token})


def as_admin(client: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {login(client, 'root')['access_token']}"}


def kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def test_tokens_of_a_retired_key_work_until_it_is_dropped(serve: Serve, identity_db: MetadataDB) -> None:
    users.create_user(identity_db, "alice", PASSWORD)
    with serve(KEY_A) as under_a:
        first, second = login(under_a), login(under_a)
    assert kid(first["access_token"]) == kid(first["refresh_token"]) == secret_kid(KEY_A)

    with serve(KEY_B, (KEY_A,)) as rotated:
        assert me(rotated, first["access_token"]) == 200
        renewed = refresh(rotated, first["refresh_token"])
        assert renewed.status_code == 200, renewed.text
        fresh = renewed.json()
        assert kid(fresh["access_token"]) == kid(fresh["refresh_token"]) == secret_kid(KEY_B)  # signed with B
        assert me(rotated, fresh["access_token"]) == 200
        assert kid(login(rotated)["access_token"]) == secret_kid(KEY_B)
        assert refresh(rotated, first["refresh_token"]).status_code == 401  # used up, as before rotation

    with serve(KEY_B) as dropped:
        assert me(dropped, second["access_token"]) == 401
        assert refresh(dropped, second["refresh_token"]).status_code == 401
        assert me(dropped, fresh["access_token"]) == 200
        assert refresh(dropped, fresh["refresh_token"]).status_code == 200


def test_a_key_never_listed_is_refused(serve: Serve, identity_db: MetadataDB) -> None:
    users.create_user(identity_db, "alice", PASSWORD)
    with serve(KEY_A) as under_a:
        pair = login(under_a)
    with serve(KEY_B, ("another-retired-key-" + "c" * 40,)) as other:
        assert me(other, pair["access_token"]) == 401
        assert refresh(other, pair["refresh_token"]).status_code == 401


def test_named_rdb_sources_survive_rotation(serve: Serve, identity_db: MetadataDB,
                                           make_settings: Callable[..., Settings]) -> None:
    users.create_user(identity_db, "root", PASSWORD, role="admin")
    add_source(identity_db, make_settings(secret_key=KEY_A).jwt_secret(),  # as `rag-cli rdb sources add` does
               NamedSource("crm", DatabaseConfig.from_url(SOURCE_URL)))

    with serve(KEY_B, (KEY_A,)) as rotated:
        listed = rotated.get("/extract/rdb/sources", headers=as_admin(rotated))
        assert listed.status_code == 200, listed.text
        assert [s["name"] for s in listed.json()["sources"]] == ["crm"]
        assert "crm-pw-123" not in listed.text

    with serve(KEY_B) as dropped:
        refused = dropped.get("/extract/rdb/sources", headers=as_admin(dropped))
        assert refused.status_code == 422 and refused.json()["field"] == "source"


@pytest.mark.parametrize("raw", ["old-one, old-two", '["old-one", "old-two"]', " old-one,,old-two ,"])
def test_retired_keys_setting_forms(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_RETIRED_SECRET_KEYS", raw)
    settings = Settings(secret_key="current-key")  # type: ignore[call-arg]
    assert settings.jwt_secret().retired == ("old-one", "old-two")
    assert "old-one" not in str(settings.masked()) and "old-one" not in repr(settings.jwt_secret())


def test_a_malformed_retired_keys_list_names_the_variable_not_the_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_RETIRED_SECRET_KEYS", '["old-secret-value", 42]')
    with pytest.raises(ConfigError) as caught:
        Settings()
    assert caught.value.field == "RAG_RETIRED_SECRET_KEYS" and "old-secret-value" not in str(caught.value)
