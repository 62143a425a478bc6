"""``AuthService``: bearer tokens (JWT access tokens and ``rr_`` API keys) → ``Principal``.

The token only names the user; role, active flag and group ids are read from the metadata DB on every
call, so deactivating a user or removing them from a group takes effect on their next request.

Login protection (``rag_ray.access.lockout``): failed logins are counted per username and client address, invalid API
keys and refresh tokens per address; a locked subject gets 429 with ``Retry-After``. Logins, refreshes, revocations,
API-key failures, lockouts and unlocks are audited (``rag_ray.audit``); the client address and request id come from
the actor the HTTP layer binds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rag_ray.access.lockout import API_KEY, REFRESH, USER, LockoutPolicy, LoginLockout, Subject, login_subjects
from rag_ray.access.passwords import hash_password, needs_rehash, verify_password
from rag_ray.access.tokens import KeyRing, TokenClaims
from rag_ray.access.users import API_KEY_PREFIX, aware, find_user, group_ids_of, hash_api_key
from rag_ray.audit import FAILURE, Actor, AuditLog, current_actor
from rag_ray.audit.orm import SKIP_PASSWORD_CHANGE
from rag_ray.config import Settings
from rag_ray.errors import AuthenticationError
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import ApiKey, RevokedToken, User
from rag_ray.types import Principal

API_KEY_TOUCH_INTERVAL = timedelta(minutes=5)  # last_used_at is a hint; don't write on every request
INVALID = "invalid token"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"

    def to_dict(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "refresh_token": self.refresh_token,
                "token_type": self.token_type, "expires_in": self.expires_in}


class AuthService:
    """Implements the API's ``Authenticator`` protocol, plus login, refresh and revocation."""

    def __init__(self, db: MetadataDB, settings: Settings, *, keys: KeyRing | None = None,
                 clock: Callable[[], float] = time.time):
        self.db = db
        self.settings = settings
        self.keys = keys or KeyRing.from_settings(settings)
        self.lockout = LoginLockout(db, LockoutPolicy.from_settings(settings), clock)
        self.audit = AuditLog(db, clock)

    # ---- the Authenticator protocol ----
    def authenticate(self, token: str) -> Principal:
        if token.startswith(API_KEY_PREFIX):
            return self._guarded(API_KEY, "auth.api_key", lambda: self._from_api_key(token))
        claims = self.keys.decode(token, "access")
        with self.db.session() as s:
            _refuse_revoked(s, claims.jti)
            return _principal(s, claims.sub)

    def known(self, token: str) -> Principal | None:
        return None  # every token is checked against the DB (revocation, role, groups): no answer without I/O

    def _from_api_key(self, key: str) -> Principal:
        now = datetime.now(UTC)
        with self.db.session() as s:
            record = s.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key)))
            if record is None or record.revoked_at is not None:
                raise AuthenticationError("invalid API key")
            if record.expires_at is not None and aware(record.expires_at) <= now:
                raise AuthenticationError("API key expired")
            if record.last_used_at is None or aware(record.last_used_at) < now - API_KEY_TOUCH_INTERVAL:
                record.last_used_at = now
            return _principal(s, record.user_id)

    def _guarded(self, kind: str, action: str, attempt: Callable[[], Any]) -> Any:
        """``attempt`` unless the client address is locked for ``kind``; a failure is counted and audited."""
        address = current_actor().address
        subjects: list[Subject] = [(kind, address)] if address else []
        locked = self.lockout.refusal(subjects)
        if locked is not None:
            self.audit.record(action, outcome=FAILURE, details={"reason": "locked"})
            raise locked
        try:
            return attempt()
        except AuthenticationError as exc:
            self._failed(subjects, action, "", "", exc.message)
            raise

    def _failed(self, subjects: list[Subject], action: str, target_type: str, target_id: str, reason: str,
                **details: Any) -> None:
        self.audit.record(action, target_type=target_type, target_id=target_id, outcome=FAILURE,
                          details={"reason": reason, **details})
        for kind, subject in self.lockout.fail(subjects):
            self.audit.record("auth.lockout", target_type=kind, target_id=subject,
                              details={"until": int(self.lockout.clock()) + self.lockout.policy.lockout_s})

    # ---- sessions ----
    def login(self, username: str, password: str) -> TokenPair:
        """Tokens for a right password. The password is hashed once whatever happens (unknown user, locked, inactive),
        and every refusal but a lockout (429) is the same 401."""
        actor = current_actor()
        subjects = login_subjects(username, actor.address)
        locked = self.lockout.refusal(subjects)
        with self.db.session() as s:
            user = s.scalar(select(User).where(User.username == username)) if username else None
            ok = verify_password(user.password_hash if user else None, password)
            granted = locked is None and user is not None and ok and user.is_active
            if granted and user is not None:
                if needs_rehash(user.password_hash):
                    s.info[SKIP_PASSWORD_CHANGE] = True  # a stronger hash of the same password: no change
                    user.password_hash = hash_password(password)
                pair, user_id, name = self._issue(user), user.user_id, user.username
            target = user.user_id if user is not None else username[:255]
            active = bool(user is not None and user.is_active)
        if locked is not None:
            self.audit.record("auth.login", target_type="user", target_id=target, outcome=FAILURE,
                              details={"username": username, "reason": "locked"})
            raise locked
        if not granted:
            reason = "unknown_user" if user is None else "wrong_password" if not ok else "inactive" if not active \
                else "refused"
            self._failed(subjects, "auth.login", "user", target, reason, username=username)
            raise AuthenticationError("invalid username or password", field="password")
        self.lockout.succeeded(username)
        self.audit.record("auth.login", target_type="user", target_id=user_id,
                          actor=Actor(user_id, name, actor.address, actor.request_id))
        return pair

    def unlock(self, user_ref: str) -> dict[str, Any]:
        """Lift the login lockout of a user (and forget its failed attempts); audited."""
        with self.db.session() as s:
            user = find_user(s, user_ref)
            user_id, username = user.user_id, user.username
        was_locked = self.lockout.clear([(USER, username.strip().lower())]) > 0
        self.audit.record("auth.unlock", target_type="user", target_id=user_id,
                          details={"username": username, "was_locked": was_locked})
        return {"user_id": user_id, "username": username, "was_locked": was_locked}

    def refresh(self, refresh_token: str) -> TokenPair:
        """A new pair for a valid refresh token, which is used up (rotation: replaying it fails). Invalid refresh
        tokens count against the client address (lockout)."""
        pair, user_id = self._guarded(REFRESH, "auth.refresh", lambda: self._refresh(refresh_token))
        self.audit.record("auth.refresh", target_type="user", target_id=user_id,
                          actor=Actor(user_id, "", current_actor().address, current_actor().request_id))
        return pair

    def _refresh(self, refresh_token: str) -> tuple[TokenPair, str]:
        claims = self.keys.decode(refresh_token, "refresh")
        try:
            with self.db.session() as s:
                _refuse_revoked(s, claims.jti)
                user = _active_user(s, claims.sub)
                s.add(_revocation(claims))
                s.flush()
                return self._issue(user), user.user_id
        except IntegrityError:  # a concurrent refresh with the same token won the race
            raise AuthenticationError(INVALID) from None

    def revoke(self, token: str) -> None:
        """Revoke a JWT (access or refresh) until its expiry, or an API key for good."""
        if token.startswith(API_KEY_PREFIX):
            self._revoke_api_key(token)
            return
        claims = self.keys.decode(token, None)
        try:
            with self.db.session() as s:
                s.execute(delete(RevokedToken).where(RevokedToken.expires_at < datetime.now(UTC)))
                if s.get(RevokedToken, claims.jti) is None:
                    s.add(_revocation(claims))
        except IntegrityError:  # revoked twice at once: the goal is reached either way
            return
        self.audit.record("auth.revoke", target_type="user", target_id=claims.sub,
                          details={"kind": claims.typ, "jti": claims.jti})

    def _revoke_api_key(self, key: str) -> None:
        with self.db.session() as s:
            record = s.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key)))
            if record is None:
                raise AuthenticationError("invalid API key")
            record.revoked_at = record.revoked_at or datetime.now(UTC)

    def _issue(self, user: User) -> TokenPair:
        extra = {"username": user.username}
        access, _ = self.keys.issue(user.user_id, "access", extra=extra)
        refresh, _ = self.keys.issue(user.user_id, "refresh", extra=extra)
        return TokenPair(access, refresh, self.keys.access_ttl_s)


def _revocation(claims: TokenClaims) -> RevokedToken:
    return RevokedToken(jti=claims.jti, user_id=claims.sub, expires_at=claims.expires_at)


def _refuse_revoked(session: Session, jti: str) -> None:
    if session.get(RevokedToken, jti) is not None:
        raise AuthenticationError("token revoked")


def _active_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        raise AuthenticationError(INVALID)
    return user


def _principal(session: Session, user_id: str) -> Principal:
    user = _active_user(session, user_id)
    return Principal(user.user_id, user.username, user.role, group_ids_of(session, user.user_id))
