"""``AuthService``: bearer tokens (JWT access tokens and ``rr_`` API keys) → ``Principal``.

The token only names the user; role, active flag and group ids are read from the metadata DB on every
call, so deactivating a user or removing them from a group takes effect on their next request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rag_ray.access.passwords import hash_password, needs_rehash, verify_password
from rag_ray.access.tokens import KeyRing, TokenClaims
from rag_ray.access.users import API_KEY_PREFIX, aware, group_ids_of, hash_api_key
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

    def __init__(self, db: MetadataDB, settings: Settings, *, keys: KeyRing | None = None):
        self.db = db
        self.settings = settings
        self.keys = keys or KeyRing.from_settings(settings)

    # ---- the Authenticator protocol ----
    def authenticate(self, token: str) -> Principal:
        if token.startswith(API_KEY_PREFIX):
            return self._from_api_key(token)
        claims = self.keys.decode(token, "access")
        with self.db.session() as s:
            _refuse_revoked(s, claims.jti)
            return _principal(s, claims.sub)

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

    # ---- sessions ----
    def login(self, username: str, password: str) -> TokenPair:
        with self.db.session() as s:
            user = s.scalar(select(User).where(User.username == username)) if username else None
            ok = verify_password(user.password_hash if user else None, password)
            if user is None or not ok or not user.is_active:
                raise AuthenticationError("invalid username or password", field="password")
            if needs_rehash(user.password_hash):
                user.password_hash = hash_password(password)
            return self._issue(user)

    def refresh(self, refresh_token: str) -> TokenPair:
        """A new pair for a valid refresh token, which is used up (rotation: replaying it fails)."""
        claims = self.keys.decode(refresh_token, "refresh")
        try:
            with self.db.session() as s:
                _refuse_revoked(s, claims.jti)
                user = _active_user(s, claims.sub)
                s.add(_revocation(claims))
                s.flush()
                return self._issue(user)
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
