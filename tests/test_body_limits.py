"""Request body guards over HTTP (``rag_ray.api.limits``), the production wiring with the real ``AuthService``.

JSON bodies: nesting depth and UTF-8 are checked on the raw bytes before any parser runs (422 naming ``body``).
Sizes: a declared ``Content-Length`` over the cap is answered 413 before the body is read, and a chunked body is cut
off at the cap. Streaming cases run over ``httpx.ASGITransport`` with a generator body that counts the bytes the
server pulled, so "not read" is measured rather than assumed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from rag_ray.access import users
from rag_ray.api.app import create_app
from rag_ray.api.limits import BodyRule
from rag_ray.config import Settings
from rag_ray.metadata import MetadataDB
from tests.access_fixtures import PASSWORD, make_services

pytest_plugins = ["tests.access_fixtures"]

DEEP = 100_000
CHUNK = 64 * 1024
BOUNDARY = "rag-ray-test-boundary"
# route → whether it needs a bearer token
JSON_ROUTES = {"/auth/token": False, "/auth/logout": True, "/auth/refresh": False, "/chat": True, "/query": True,
               "/embeddings": True}

Build = Callable[..., FastAPI]


@pytest.fixture
def build(make_settings: Callable[..., Settings], identity_db: MetadataDB) -> Build:
    users.create_user(identity_db, "alice", PASSWORD)
    return lambda **overrides: create_app(make_services(make_settings(**overrides), identity_db, None))


@pytest.fixture
def client(build: Build) -> Iterator[TestClient]:
    with TestClient(build(), raise_server_exceptions=False) as test_client:
        yield test_client


def bearer(client: TestClient) -> dict[str, str]:
    token = client.post("/auth/token", json={"username": "alice", "password": PASSWORD}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def login_body(pad_depth: int, **fields: str) -> bytes:
    """A login body whose extra ``pad`` field nests ``pad_depth`` lists (the object itself is one more level)."""
    head = json.dumps({"username": "alice", "password": PASSWORD, **fields})[:-1].encode()
    return head + b', "pad": ' + nested(pad_depth) + b"}"


def post_raw(client: TestClient, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return client.post(path, content=body, headers={**headers, "Content-Type": "application/json"})


# ---- JSON depth and encoding (were 500 on /auth/token and /auth/logout, 400 on the model routes) ----
def test_deeply_nested_json_is_422_naming_body_on_every_json_route(client: TestClient) -> None:
    auth = bearer(client)
    shapes = {"list": nested(DEEP), "object": b'{"a":' * DEEP + b"1" + b"}" * DEEP}
    got = {(path, shape): post_raw(client, path, body, auth if needs_auth else {})
           for path, needs_auth in JSON_ROUTES.items() for shape, body in shapes.items()}
    assert {k: (r.status_code, r.json().get("field")) for k, r in got.items()} == {k: (422, "body") for k in got}
    assert "nests deeper than 64 levels" in got["/auth/token", "list"].json()["message"]
    assert client.get("/auth/me", headers=auth).status_code == 200  # the refused logout revoked nothing


def test_depth_cap_is_exact_configurable_and_blind_to_brackets_in_strings(build: Build) -> None:
    with TestClient(build(max_json_depth=8)) as client:
        assert post_raw(client, "/auth/token", login_body(7), {}).status_code == 200  # 8 levels
        too_deep = post_raw(client, "/auth/token", login_body(8), {})
        assert too_deep.status_code == 422 and too_deep.json()["field"] == "body"
        brackets_in_strings = login_body(7, note='[{"\\"[' * 50 + "\\\\")
        assert post_raw(client, "/auth/token", brackets_in_strings, {}).status_code == 200
        wrong_password = json.dumps({"username": "alice", "password": "[" * 100}).encode()
        assert post_raw(client, "/auth/token", wrong_password, {}).status_code == 401


def test_invalid_utf8_and_non_json_bodies_are_422(client: TestClient) -> None:
    auth = bearer(client)
    bodies = {"invalid utf-8": b'{"username": "\xff\xfe", "password": "x"}', "utf-16": '{"a": 1}'.encode("utf-16"),
              "not json": b"{not json", "truncated": b'{"username": "alice", "password": ['}
    got = {(path, name): post_raw(client, path, body, auth).status_code
           for path in ("/auth/token", "/auth/logout", "/chat", "/query") for name, body in bodies.items()}
    assert got == {k: 422 for k in got}
    refused = post_raw(client, "/chat", bodies["invalid utf-8"], auth).json()
    assert refused["field"] == "body" and refused["error"] == "invalid_input"
    malformed = post_raw(client, "/query", bodies["not json"], auth).json()  # its field once read "1", the offset
    assert malformed["field"] == "body" and malformed["message"].startswith("body: invalid JSON at character 1: ")


# ---- sizes, measured on the wire ----
class Body:
    """An async request body that counts what the server has pulled from it."""

    def __init__(self, total: int, head: bytes = b"", tail: bytes = b""):
        self.total, self.head, self.tail, self.consumed = total, head, tail, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self._parts():
            self.consumed += len(part)
            yield part

    def _parts(self) -> Iterator[bytes]:
        yield self.head
        for start in range(0, self.total, CHUNK):
            yield b"x" * min(CHUNK, self.total - start)
        yield self.tail

    @property
    def size(self) -> int:
        return len(self.head) + self.total + len(self.tail)


def upload_body(file_bytes: int) -> Body:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n"
            "Content-Type: text/plain\r\n\r\n").encode()
    return Body(file_bytes, head, f"\r\n--{BOUNDARY}--\r\n".encode())


def send(app: FastAPI, path: str, body: Body, headers: dict[str, str], *, declare: bool) -> tuple[int, Any]:
    """POST ``body`` to ``app``: with a Content-Length of its full size (``declare``) or chunked."""

    async def run() -> tuple[int, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            token = (await http.post("/auth/token", json={"username": "alice", "password": PASSWORD})).json()
            sized = {"Content-Length": str(body.size)} if declare else {}
            response = await http.post(path, content=body, headers={
                "Authorization": f"Bearer {token['access_token']}", **headers, **sized})
            return response.status_code, response.json()

    return asyncio.run(run())


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def test_upload_over_the_cap_by_content_length_is_413_before_reading(build: Build) -> None:
    app = build()  # the default 50 MiB upload cap
    body = upload_body(51 * 1024 * 1024)
    status, answer = send(app, "/documents/upload", body, MULTIPART, declare=True)
    assert (status, answer["error"], answer["field"]) == (413, "payload_too_large", "file")
    assert body.consumed == 0


def test_chunked_upload_is_cut_off_at_the_cap(build: Build) -> None:
    limit = 256 * 1024
    app = build(max_upload_bytes=limit)
    body = upload_body(16 * limit)
    status, answer = send(app, "/documents/upload", body, MULTIPART, declare=False)
    assert (status, answer["field"]) == (413, "file")
    assert body.consumed <= BodyRule.upload(limit).max_bytes + CHUNK < body.size


def test_upload_under_the_cap_reaches_the_route(build: Build) -> None:
    limit = 256 * 1024
    app = build(max_upload_bytes=limit)
    over_file_cap = upload_body(limit + 1)  # the body is under the stream cap; the route checks the file itself
    status, answer = send(app, "/documents/upload", over_file_cap, MULTIPART, declare=True)
    assert (status, answer["field"]) == (413, "file") and over_file_cap.consumed == over_file_cap.size
    unsupported = upload_body(10)
    unsupported.head = unsupported.head.replace(b"big.txt", b"tool.exe")
    status, answer = send(app, "/documents/upload", unsupported, MULTIPART, declare=True)
    assert (status, answer["field"]) == (422, "file")


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "chunked"])
def test_json_body_over_the_request_cap_is_413_naming_body(build: Build, declare: bool) -> None:
    limit = 128 * 1024
    app = build(max_request_bytes=limit)
    body = Body(8 * limit, b'{"messages": [{"role": "user", "content": "', b'"}]}')
    status, answer = send(app, "/chat", body, {"Content-Type": "application/json"}, declare=declare)
    assert (status, answer["error"], answer["field"]) == (413, "payload_too_large", "body")
    assert body.consumed <= (0 if declare else limit + CHUNK)
