"""A per-process cache of verified callers, so a burst of requests with one bearer token costs one DB lookup.

``authenticate`` on ``AuthService`` reads the DB twice per request (the token's revocation, the user's role and
groups). This wrapper keeps a success for ``RAG_AUTH_CACHE_TTL_S`` seconds (default 5): **a revoked token, a
disabled user or a changed role/groups takes effect within that bound** on every replica, and a token is never
reused past its own ``exp``. Failures are never cached (each one still counts toward the address lockout).
``ttl_s`` = 0 turns the cache off. Entries are kept for at most ``max_entries`` tokens (least recently used out).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import jwt

from rag_ray.access.users import API_KEY_PREFIX
from rag_ray.types import Principal


class TokenVerifier(Protocol):
    def authenticate(self, token: str) -> Principal: ...


class CachingAuthenticator:
    def __init__(self, inner: TokenVerifier, ttl_s: float, *, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.time):
        self.inner, self.ttl_s, self.max_entries, self.clock = inner, ttl_s, max_entries, clock
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()  # misses are verified on a worker thread, hits on the event loop

    def authenticate(self, token: str) -> Principal:
        known = self.known(token)
        if known is not None:
            return known
        now = self.clock()
        principal = self.inner.authenticate(token)  # verifies; raises on any failure (nothing cached then)
        if self.ttl_s > 0:
            self._remember(token, principal, min(now + self.ttl_s, _expiry(token)))
        return principal

    def known(self, token: str) -> Principal | None:
        """A cached, unexpired success: no DB, no signature check (the request path skips a thread hop)."""
        if self.ttl_s <= 0:
            return None
        with self._lock:
            entry = self._entries.get(token)
            if entry is None or entry[1] <= self.clock():
                return None
            self._entries.move_to_end(token)
            return entry[0]

    def _remember(self, token: str, principal: Principal, until: float) -> None:
        with self._lock:
            self._entries[token] = (principal, until)
            self._entries.move_to_end(token)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


def _expiry(token: str) -> float:
    """The ``exp`` of a JWT the inner authenticator has just verified (API keys: no bound of their own here)."""
    if token.startswith(API_KEY_PREFIX):
        return float("inf")
    claims = jwt.decode(token, options={"verify_signature": False})
    return float(claims.get("exp", float("inf")))
