"""The principal cache (``RAG_AUTH_CACHE_TTL_S``) over the real ``AuthService``: a verified token skips the DB for
the TTL, and revocation, a disabled user or a changed role take effect once the TTL has passed, never later; a token
is not reused past its own expiry; failures are not cached; TTL 0 turns it off. The clock is injected."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rag_ray.access import users
from rag_ray.access.cache import CachingAuthenticator
from rag_ray.access.service import AuthService
from rag_ray.config import Settings
from rag_ray.errors import AuthenticationError
from rag_ray.metadata import MetadataDB
from rag_ray.types import Principal

PASSWORD = "correct-horse-battery"


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingAuth:
    """The real AuthService, counting the authentications that reach it (each one reads the DB)."""

    def __init__(self, inner: AuthService):
        self.inner, self.calls = inner, 0

    def authenticate(self, token: str) -> Principal:
        self.calls += 1
        return self.inner.authenticate(token)


@pytest.fixture
def accounts(make_settings: Callable[..., Settings], tmp_path) -> AuthService:
    db = MetadataDB(f"sqlite:///{tmp_path / 'auth.sqlite'}")
    users.create_user(db, "root", PASSWORD, role="admin")  # so carol is not the last admin
    users.create_user(db, "carol", PASSWORD, role="admin")
    return AuthService(db, make_settings())


def rig(accounts: AuthService, ttl_s: float = 5.0) -> tuple[CachingAuthenticator, CountingAuth, Clock, str]:
    import time

    clock = Clock(time.time())
    counting = CountingAuth(accounts)
    token = accounts.login("carol", PASSWORD).access_token
    return CachingAuthenticator(counting, ttl_s, clock=clock), counting, clock, token


def test_a_verified_token_skips_the_db_within_the_ttl(accounts):
    cache, counting, clock, token = rig(accounts)
    first = cache.authenticate(token)
    clock.now += 4.9
    assert cache.authenticate(token) == first and counting.calls == 1
    clock.now += 0.2  # past the TTL: verified again
    assert cache.authenticate(token) == first and counting.calls == 2


def test_revocation_takes_effect_within_the_ttl(accounts):
    cache, _, clock, token = rig(accounts)
    cache.authenticate(token)
    accounts.revoke(token)
    cache.authenticate(token)  # inside the stated bound the cached caller may still be served
    clock.now += 5.01
    with pytest.raises(AuthenticationError):
        cache.authenticate(token)


def test_disabled_user_and_changed_role_take_effect_within_the_ttl(accounts):
    cache, _, clock, token = rig(accounts)
    assert cache.authenticate(token).role == "admin"
    users.set_role(accounts.db, "carol", "user")
    clock.now += 5.01
    assert cache.authenticate(token).role == "user"
    users.set_active(accounts.db, "carol", False)
    clock.now += 5.01
    with pytest.raises(AuthenticationError):
        cache.authenticate(token)


def test_failures_are_not_cached_and_ttl_zero_is_off(accounts):
    cache, counting, _, token = rig(accounts)
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            cache.authenticate(token + "x")
    assert counting.calls == 2
    off, counting_off, _, token = rig(accounts, ttl_s=0)
    off.authenticate(token)
    off.authenticate(token)
    assert counting_off.calls == 2


def test_a_token_is_not_reused_past_its_expiry(accounts):
    cache, counting, clock, token = rig(accounts, ttl_s=300)
    cache.authenticate(token)
    clock.now += accounts.keys.access_ttl_s + 1  # the JWT's own exp has passed (on this clock), the TTL has not
    cache.authenticate(token)  # so the cache does not answer: the token goes back to AuthService (real clock)
    assert counting.calls == 2


def test_known_answers_only_verified_unexpired_tokens_without_the_db(accounts):
    cache, counting, clock, token = rig(accounts)
    assert cache.known(token) is None  # never verified: the request path verifies it on a worker thread
    verified = cache.authenticate(token)
    clock.now += 4.9
    assert cache.known(token) == verified and counting.calls == 1
    clock.now += 0.2
    assert cache.known(token) is None  # past the TTL: verified again, revocation honoured
    off, _, _, token = rig(accounts, ttl_s=0)
    off.authenticate(token)
    assert off.known(token) is None
