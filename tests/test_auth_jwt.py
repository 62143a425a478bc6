"""The JWT rejection matrix over HTTP (every bad token → 401), and key rotation by ``kid``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from rag_ray.access import users
from rag_ray.access.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, KeyRing, SigningKey
from rag_ray.api.app import create_app
from rag_ray.metadata import MetadataDB
from tests.access_fixtures import PASSWORD, make_services

pytest_plugins = ["tests.access_fixtures"]  # its fixtures (db_url, identity_db, world)

NEW_SECRET = "new-secret-" + "n" * 40
OLD_SECRET = "old-secret-" + "o" * 40


def _rsa_pems() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


PRIVATE_PEM, PUBLIC_PEM = _rsa_pems()


def ring(*, with_old: bool = True, **options: Any) -> KeyRing:
    keys = [SigningKey.hmac("new", NEW_SECRET), SigningKey.asymmetric("rs1", PUBLIC_PEM, PRIVATE_PEM)]
    if with_old:
        keys.append(SigningKey.hmac("old", OLD_SECRET, can_sign=False))
    return KeyRing(keys, "new", **options)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes] = lambda _: b"") -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def claims(sub: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": sub, "typ": "access", "jti": secrets.token_hex(8), "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE,
            "iat": now, "nbf": now, "exp": now + 600}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def hs(payload: dict[str, Any], secret: str = NEW_SECRET, kid: str | None = "new") -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers)


def tamper(token: str, **changes: Any) -> str:
    header, payload, sig = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    return f"{header}.{b64(json.dumps(body).encode())}.{sig}"


@pytest.fixture
def api(make_settings, identity_db: MetadataDB) -> Iterator[tuple[TestClient, str, Any]]:  # type: ignore[no-untyped-def]
    services = make_services(make_settings(), identity_db, None, keys=ring())  # type: ignore[arg-type]
    uid = users.create_user(identity_db, "alice", PASSWORD).user_id
    with TestClient(create_app(services)) as client:
        yield client, uid, services.auth


def me(client: TestClient, token: str) -> int:
    return client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code


def matrix(uid: str, auth: Any) -> dict[str, tuple[str, int]]:
    """case → (token, expected status)."""
    now = int(time.time())
    valid = hs(claims(uid))
    rs_valid = jwt.encode(claims(uid), PRIVATE_PEM, algorithm="RS256", headers={"kid": "rs1"})
    confusion = forge({"alg": "HS256", "typ": "JWT", "kid": "rs1"}, claims(uid),
                      lambda m: hmac.new(PUBLIC_PEM, m, hashlib.sha256).digest())
    return {
        "valid HS256 (active kid)": (valid, 200),
        "valid RS256 (kid rs1)": (rs_valid, 200),
        "old kid still configured (rotation)": (hs(claims(uid), OLD_SECRET, "old"), 200),
        "expired 1s ago (inside leeway)": (hs(claims(uid, exp=now - 1)), 200),  # 9 s of slack on a loaded box
        "issued by login": (auth.login("alice", PASSWORD).access_token, 200),
        "alg none": (forge({"alg": "none", "typ": "JWT", "kid": "new"}, claims(uid)), 401),
        "alg none, no kid": (forge({"alg": "none", "typ": "JWT"}, claims(uid)), 401),
        "alg None (capitalised)": (forge({"alg": "None", "kid": "new"}, claims(uid)), 401),
        "wrong key, right kid": (hs(claims(uid), "attacker-secret-" + "a" * 40), 401),
        "HS/RS confusion (HS256 keyed with the RSA public key)": (confusion, 401),
        "RS256 token under an HS kid": (jwt.encode(claims(uid), PRIVATE_PEM, algorithm="RS256",
                                                   headers={"kid": "new"}), 401),
        "expired": (hs(claims(uid, iat=now - 7200, nbf=now - 7200, exp=now - 3600)), 401),
        "not yet valid (nbf)": (hs(claims(uid, nbf=now + 3600, exp=now + 7200)), 401),
        "issued in the future (iat)": (hs(claims(uid, iat=now + 3600, exp=now + 7200)), 401),
        "wrong iss": (hs(claims(uid, iss="https://evil.example")), 401),
        "wrong aud": (hs(claims(uid, aud="another-service")), 401),
        "missing aud": (hs(claims(uid, aud=None)), 401),
        "missing exp": (hs(claims(uid, exp=None)), 401),
        "missing jti": (hs(claims(uid, jti=None)), 401),
        "tampered payload (sub)": (tamper(valid, sub="u_someone_else"), 401),
        "tampered payload (role)": (tamper(valid, role="admin"), 401),
        "refresh token used as access": (auth.login("alice", PASSWORD).refresh_token, 401),
        "unknown kid": (hs(claims(uid), kid="retired-long-ago"), 401),
        "no kid": (hs(claims(uid), kid=None), 401),
        "unknown user": (hs(claims("u_nobody")), 401),
        # validly signed, but a claim has the wrong type (these were 500s)
        "exp a numeric string": (hs(claims(uid, exp=str(now + 600))), 401),
        "iat a numeric string": (hs(claims(uid, iat=str(now))), 401),
        "nbf a numeric string": (hs(claims(uid, nbf=str(now))), 401),
        "iat a bool": (hs(claims(uid, iat=True)), 401),
        "exp a list": (hs(claims(uid, exp=[now + 600])), 401),
        "exp past the datetime range": (hs(claims(uid, exp=10**20)), 401),
        "exp past the float range": (hs(claims(uid, exp=10**400)), 401),
        "nbf before the float range": (hs(claims(uid, nbf=-(10**400))), 401),
        "iat before year 1": (hs(claims(uid, iat=-(10**12))), 401),
        "sub a number": (hs(claims(12345)), 401),  # type: ignore[arg-type]
        "sub an object": (hs(claims({"$ne": ""})), 401),  # type: ignore[arg-type]
        "jti a list": (hs(claims(uid, jti=["j"])), 401),
        "jti longer than its column": (hs(claims(uid, jti="j" * 65)), 401),
        "username an object": (hs(claims(uid, username={"$ne": ""})), 401),
        "roles claim of any type (never read: the role is the DB's)": (hs(claims(uid, roles={"admin": 1})), 200),
        "garbage": ("not.a.jwt", 401),
        "oversized": ("a" * 9000, 401),
        "unknown API key": ("rr_" + secrets.token_urlsafe(32), 401),
    }


def test_jwt_matrix_over_http(api: tuple[TestClient, str, Any]) -> None:
    client, uid, auth = api
    results = {case: (expected, me(client, token)) for case, (token, expected) in matrix(uid, auth).items()}
    for case, (expected, got) in results.items():
        print(f"{'ok ' if expected == got else 'BAD'} {got} (want {expected})  {case}")
    assert {c: got for c, (_, got) in results.items()} == {c: exp for c, (exp, _) in results.items()}
    assert client.get("/auth/me").status_code == 401  # no header
    assert client.get("/auth/me", headers={"Authorization": "Basic abc"}).status_code == 401


def test_revoked_token_is_rejected(api: tuple[TestClient, str, Any]) -> None:
    client, _, auth = api
    pair = auth.login("alice", PASSWORD)
    headers = {"Authorization": f"Bearer {pair.access_token}"}
    assert client.get("/auth/me", headers=headers).status_code == 200
    assert client.post("/auth/logout", headers=headers, json={"refresh_token": pair.refresh_token}).status_code == 200
    assert client.get("/auth/me", headers=headers).status_code == 401
    assert client.post("/auth/refresh", json={"refresh_token": pair.refresh_token}).status_code == 401


def test_deactivated_user_is_rejected_on_next_request(api: tuple[TestClient, str, Any],
                                                      identity_db: MetadataDB) -> None:
    client, _, auth = api
    users.create_user(identity_db, "root", PASSWORD, role="admin")
    token = auth.login("alice", PASSWORD).access_token
    assert me(client, token) == 200
    users.set_active(identity_db, "alice", False)
    assert me(client, token) == 401
    users.set_active(identity_db, "alice", True)
    assert me(client, token) == 200


def test_rotation_retiring_the_old_kid(make_settings, identity_db: MetadataDB) -> None:  # type: ignore[no-untyped-def]
    uid = users.create_user(identity_db, "alice", PASSWORD).user_id
    old_only = KeyRing([SigningKey.hmac("old", OLD_SECRET)], "old")
    old_token, _ = old_only.issue(uid, "access")
    rotated = KeyRing([SigningKey.hmac("new", NEW_SECRET), SigningKey.hmac("old", OLD_SECRET, can_sign=False)], "new")
    retired = KeyRing([SigningKey.hmac("new", NEW_SECRET)], "new")
    for keys, expected in ((old_only, 200), (rotated, 200), (retired, 401)):
        services = make_services(make_settings(), identity_db, None, keys=keys)  # type: ignore[arg-type]
        with TestClient(create_app(services)) as client:
            assert me(client, old_token) == expected
            new_token = services.auth.login("alice", PASSWORD).access_token  # type: ignore[attr-defined]
            assert jwt.get_unverified_header(new_token)["kid"] == keys.active.kid
            assert me(client, new_token) == 200
