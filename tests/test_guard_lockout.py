"""Login protection through HTTP: lockout after repeated failures per username and per client address, the same
answer (and one password hash) for unknown users and wrong passwords, unlock by an admin, expiry on an injected
clock; invalid API keys and refresh tokens limited per address the same way; anonymous /auth throttled."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import rag_ray.access.service as auth_service
from rag_ray.metadata import MetadataDB
from rag_ray.store.milvus import ChunkStore
from tests.access_fixtures import PASSWORD
from tests.guard_helpers import Rig, build_rig

pytest_plugins = ["tests.access_fixtures"]

WRONG = "not-the-password"


@pytest.fixture
def make_rig(make_settings: Any, identity_db: MetadataDB, fake_store: ChunkStore) -> Iterator[Callable[..., Rig]]:
    built: list[Rig] = []

    def make(**settings: Any) -> Rig:
        rig = build_rig(make_settings(**settings), identity_db, fake_store)
        built.append(rig)
        return rig

    yield make
    for rig in built:
        rig.close()


def login(rig: Rig, username: str, password: str) -> Any:
    return rig.client.post("/auth/token", json={"username": username, "password": password})


def answer(response: Any) -> tuple[int, str]:
    """What a client learns: the status and the body without its request id."""
    body = response.json()
    body.get("details", {}).pop("request_id", None)
    return response.status_code, repr(sorted(body.items()))


def test_lockout_cycle_same_answer_for_unknown_users_then_unlock(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    admin = rig.headers("admin")  # signed in before anything is locked
    alice = [login(rig, "alice", WRONG) for _ in range(5)]
    ghost = [login(rig, "nobody-here", WRONG) for _ in range(5)]
    assert {answer(r) for r in alice} == {answer(r) for r in ghost} == {answer(alice[0])}  # no user enumeration
    assert alice[0].status_code == 401

    locked, ghost_locked = login(rig, "alice", PASSWORD), login(rig, "nobody-here", PASSWORD)
    assert answer(locked) == answer(ghost_locked) and locked.status_code == 429
    assert "too many failed logins for this username" in locked.json()["message"]
    assert locked.headers["Retry-After"] == "900"
    assert login(rig, "ALICE", PASSWORD).status_code == 429  # counted case-folded

    listed = rig.client.get("/admin/lockouts", headers=admin).json()["lockouts"]
    assert {(lock["kind"], lock["subject"]) for lock in listed} == {("user", "alice"), ("user", "nobody-here")}
    unlocked = rig.client.post("/admin/users/alice/unlock", headers=admin)
    assert unlocked.status_code == 200 and unlocked.json()["was_locked"] is True
    assert login(rig, "alice", PASSWORD).status_code == 200
    assert rig.client.post("/admin/users/alice/unlock", headers=rig.headers("bob")).status_code == 403


def test_25_wrong_passwords_then_the_right_one_is_refused(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(login_address_max_failures=100)
    assert [login(rig, "bob", WRONG).status_code for _ in range(25)] == [401] * 5 + [429] * 20
    assert login(rig, "bob", PASSWORD).status_code == 429


def test_lockout_expires_and_success_clears_the_count(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(login_max_failures=3, login_lockout_s=600, login_failure_window_s=600)
    for _ in range(2):
        assert login(rig, "carol", WRONG).status_code == 401
    assert login(rig, "carol", PASSWORD).status_code == 200  # clears carol's count
    for _ in range(3):
        assert login(rig, "carol", WRONG).status_code == 401
    assert login(rig, "carol", PASSWORD).status_code == 429
    rig.clock.advance(599)
    assert login(rig, "carol", PASSWORD).headers["Retry-After"] == "1"
    rig.clock.advance(1)
    assert login(rig, "carol", PASSWORD).status_code == 200


def test_one_password_hash_per_attempt_whatever_the_outcome(make_rig: Callable[..., Rig],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    rig = make_rig(login_max_failures=2)
    hashes: list[bool] = []
    real = auth_service.verify_password

    def counting(password_hash: str | None, password: str) -> bool:
        ok = real(password_hash, password)
        hashes.append(password_hash is None)
        return ok

    monkeypatch.setattr(auth_service, "verify_password", counting)
    outcomes = [login(rig, user, password).status_code for user, password in
                [("dave", PASSWORD), ("dave", WRONG), ("ghost", WRONG), ("dave", WRONG), ("dave", PASSWORD)]]
    assert outcomes == [200, 401, 401, 401, 429]
    assert len(hashes) == 5  # unknown user (the dummy hash) and a locked account included
    assert hashes == [False, False, True, False, False]


def test_failures_per_client_address(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(login_address_max_failures=4)
    for name in ("u1", "u2", "u3", "u4"):
        assert login(rig, name, WRONG).status_code == 401
    refused = login(rig, "erin", PASSWORD)
    assert refused.status_code == 429
    assert "failed logins from this address" in refused.json()["message"]


def test_invalid_api_keys_and_refresh_tokens_lock_the_address(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(login_address_max_failures=3)
    good = rig.client.post("/admin/api-keys", headers=rig.headers("admin"), json={"user": "alice"}).json()["key"]
    pair = login(rig, "bob", PASSWORD).json()
    for i in range(3):
        bogus = {"Authorization": f"Bearer rr_guessed-key-{i}"}
        assert rig.client.get("/auth/me", headers=bogus).status_code == 401
    refused = rig.client.get("/auth/me", headers={"Authorization": f"Bearer {good}"})
    assert refused.status_code == 429 and "invalid API keys from this address" in refused.json()["message"]
    assert rig.client.get("/auth/me", headers=rig.headers("bob")).status_code == 200  # JWTs are unaffected

    for token in ("not-a-jwt", pair["access_token"], "x.y.z"):  # an access token is no refresh token either
        assert rig.client.post("/auth/refresh", json={"refresh_token": token}).status_code == 401
    blocked = rig.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert blocked.status_code == 429 and "invalid refresh tokens from this address" in blocked.json()["message"]

    events = rig.client.get("/admin/audit", headers=rig.headers("admin"), params={"action": "auth.lockout"}).json()
    assert {(e["target_type"], e["target_id"]) for e in events["events"]} == {("api_key", "testclient"),
                                                                             ("refresh", "testclient")}


def test_anonymous_auth_routes_are_throttled_per_address(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(auth_rpm_per_address=3)
    assert [login(rig, "alice", PASSWORD).status_code for _ in range(3)] == [200, 200, 200]
    refused = login(rig, "alice", PASSWORD)
    assert refused.status_code == 429 and "RAG_AUTH_RPM_PER_ADDRESS" in refused.json()["message"]
    assert refused.headers["Retry-After"] == "60"
    rig.clock.advance(60)
    assert login(rig, "alice", PASSWORD).status_code == 200
