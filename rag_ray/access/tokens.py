"""JWT issue and verification with pinned algorithms and rotating keys.

Every token carries a ``kid`` header; the key ring maps each kid to exactly one key and one algorithm, so a
token is only ever verified with the algorithm its key was configured for. That rejects ``alg: none`` and the
HS/RS confusion attack (an HS256 token "signed" with an RSA public key) by construction. Rotation: add the new
key as active, keep the old one verify-only until its tokens have expired, then drop it. From settings: the kid of
an HMAC secret is derived from it (``secret_kid``), so after ``SECRET_KEY=B RAG_RETIRED_SECRET_KEYS=A`` a token
signed under A still names A's kid and is looked up directly; there is no try-every-key fallback, as every token
rag-ray has issued carries a kid and a kid-less or unknown-kid token is refused.

Claims are type-checked after the signature: a signed token whose ``exp``/``iat``/``nbf`` is not a number, or
whose ``sub``/``jti``/``typ``/``username`` is not a short string, is an invalid token (401), never a crash.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeGuard

import jwt

from rag_ray.config import Settings
from rag_ray.errors import AuthenticationError, ConfigError

TokenType = Literal["access", "refresh"]

DEFAULT_ISSUER = "rag-ray"
DEFAULT_AUDIENCE = "rag-ray-api"
LEEWAY_S = 10
ACCESS_TTL_S = 30 * 60
REFRESH_TTL_S = 7 * 24 * 3600
MAX_TOKEN_CHARS = 8192
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256")
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti", "typ"]
MAX_ID_CHARS = 64  # sub and jti are stored in 64-character columns (users.user_id, revoked_tokens.jti)
INVALID = "invalid token"


@dataclass(frozen=True)
class SigningKey:
    """One key of the ring. ``sign_key`` None means verify-only (a retired key still honoured)."""

    kid: str
    algorithm: str
    verify_key: Any = field(repr=False)
    sign_key: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.algorithm not in HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS:
            raise ConfigError(f"unsupported JWT algorithm {self.algorithm!r}", field="algorithm")
        if not self.kid:
            raise ConfigError("every JWT key needs a kid", field="kid")

    @classmethod
    def hmac(cls, kid: str, secret: str | bytes, algorithm: str = "HS256", *, can_sign: bool = True) -> SigningKey:
        if algorithm not in HMAC_ALGORITHMS:
            raise ConfigError(f"{algorithm} is not an HMAC algorithm", field="algorithm")
        return cls(kid, algorithm, secret, secret if can_sign else None)

    @classmethod
    def asymmetric(cls, kid: str, public_pem: str | bytes, private_pem: str | bytes | None = None,
                   algorithm: str = "RS256") -> SigningKey:
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise ConfigError(f"{algorithm} is not an asymmetric algorithm", field="algorithm")
        return cls(kid, algorithm, public_pem, private_pem)


@dataclass(frozen=True)
class TokenClaims:
    sub: str
    typ: TokenType
    jti: str
    issued_at: datetime
    expires_at: datetime
    kid: str
    extra: dict[str, Any] = field(default_factory=dict)


def secret_kid(secret: str | bytes) -> str:
    """A stable, non-reversible kid for an HMAC secret (same secret → same kid on every replica)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return "hs-" + hashlib.sha256(b"rag-ray-kid\x00" + raw).hexdigest()[:12]


class KeyRing:
    """The configured keys: one active (signs), any number verify-only."""

    def __init__(self, keys: Iterable[SigningKey], active_kid: str, *, issuer: str = DEFAULT_ISSUER,
                 audience: str = DEFAULT_AUDIENCE, leeway_s: int = LEEWAY_S, access_ttl_s: int = ACCESS_TTL_S,
                 refresh_ttl_s: int = REFRESH_TTL_S):
        self._keys: dict[str, SigningKey] = {}
        for key in keys:
            if key.kid in self._keys:
                raise ConfigError(f"duplicate JWT kid {key.kid!r}", field="kid")
            self._keys[key.kid] = key
        active = self._keys.get(active_kid)
        if active is None or active.sign_key is None:
            raise ConfigError(f"active JWT kid {active_kid!r} is not a signing key of the ring", field="kid")
        self.active = active
        self.issuer, self.audience, self.leeway_s = issuer, audience, leeway_s
        self.access_ttl_s, self.refresh_ttl_s = access_ttl_s, refresh_ttl_s

    @classmethod
    def from_settings(cls, settings: Settings, *, retired: Iterable[SigningKey] = (), **options: Any) -> KeyRing:
        """HS256 with ``SECRET_KEY`` (or the generated data-dir secret); verify-only keys for the secrets of
        ``RAG_RETIRED_SECRET_KEYS``, plus ``retired``."""
        secret = settings.jwt_secret()
        active = SigningKey.hmac(secret_kid(secret), str(secret))
        old = [SigningKey.hmac(secret_kid(k), k, can_sign=False) for k in secret.retired]
        return cls([active, *old, *retired], active.kid, **options)

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def ttl(self, typ: TokenType) -> int:
        return self.access_ttl_s if typ == "access" else self.refresh_ttl_s

    def issue(self, sub: str, typ: TokenType, *, extra: dict[str, Any] | None = None,
              now: datetime | None = None) -> tuple[str, TokenClaims]:
        now = now or datetime.now(UTC)
        expires = now + timedelta(seconds=self.ttl(typ))
        jti = secrets.token_hex(16)
        payload = {**(extra or {}), "sub": sub, "typ": typ, "jti": jti, "iss": self.issuer, "aud": self.audience,
                   "iat": now, "nbf": now, "exp": expires}
        token = jwt.encode(payload, self.active.sign_key, algorithm=self.active.algorithm,
                           headers={"kid": self.active.kid})
        return token, TokenClaims(sub, typ, jti, now, expires, self.active.kid, dict(extra or {}))

    def decode(self, token: str, expected: TokenType | None) -> TokenClaims:
        """Verify signature, algorithm, time claims, issuer, audience and type (None: either type).

        Raises AuthenticationError on any failure."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationError(INVALID)
        key = self._key_for(token)
        try:
            payload = jwt.decode(token, key.verify_key, algorithms=[key.algorithm], audience=self.audience,
                                 issuer=self.issuer, leeway=self.leeway_s, options={"require": REQUIRED_CLAIMS})
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("token expired") from None
        except (jwt.PyJWTError, TypeError, ValueError, OverflowError):  # PyJWT may trip over odd claim types
            raise AuthenticationError(INVALID) from None
        return _claims(payload, key.kid, expected)

    def _key_for(self, token: str) -> SigningKey:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError(INVALID) from None
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None or header.get("alg") != key.algorithm:
            raise AuthenticationError(INVALID)
        return key


def _claims(payload: dict[str, Any], kid: str, expected: TokenType | None) -> TokenClaims:
    """The verified payload as ``TokenClaims``; any claim of the wrong type makes the token invalid."""
    sub, typ, jti = payload.get("sub"), payload.get("typ"), payload.get("jti")
    wrong_type = typ not in ("access", "refresh") or (expected is not None and typ != expected)
    if wrong_type or not _is_id(sub) or not _is_id(jti) or not isinstance(payload.get("username", ""), str):
        raise AuthenticationError(INVALID)
    issued, expires = _instant(payload["iat"]), _instant(payload["exp"])
    _instant(payload["nbf"])
    extra = {k: v for k, v in payload.items() if k not in REQUIRED_CLAIMS}
    kind: TokenType = "access" if typ == "access" else "refresh"
    return TokenClaims(sub, kind, jti, issued, expires, kid, extra)


def _is_id(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


def _instant(value: Any) -> datetime:
    """A NumericDate claim: a JSON number (not a numeric string, not a bool) in the range of a datetime."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthenticationError(INVALID)
    try:  # isfinite overflows on a huge int; fromtimestamp on one out of the datetime range
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise AuthenticationError(INVALID) from None
