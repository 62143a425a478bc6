"""Shared fixtures and builders for the identity / access-control tests.

``db_url`` is parametrized: SQLite always; PostgreSQL when ``RAG_TEST_POSTGRES_URL`` is set (each test gets
its own schema there), marked ``integration``. Import the fixtures you use:
``from tests.access_fixtures import db_url, identity_db``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from rag_ray.access import users
from rag_ray.access.service import AuthService
from rag_ray.access.tokens import KeyRing
from rag_ray.api.app import create_app
from rag_ray.api.services import Services
from rag_ray.config import Settings
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.metadata import DocumentRecord, MetadataDB
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Chunk, Principal, Visibility, make_chunk_id, sha256_text

POSTGRES_ENV = "RAG_TEST_POSTGRES_URL"
PASSWORD = "correct-horse-battery"

DB_PARAMS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=[
        pytest.mark.integration,
        pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"{POSTGRES_ENV} not set")]),
]


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A throw-away schema on the test server; the URL pins ``search_path`` to it."""
    schema = "t_" + uuid.uuid4().hex[:12]
    engine = create_engine(base_url)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=DB_PARAMS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'identity.sqlite'}"
        return
    with postgres_schema(os.environ[POSTGRES_ENV]) as url:
        yield url


@pytest.fixture
def identity_db(db_url: str) -> Iterator[MetadataDB]:
    db = MetadataDB(db_url)
    yield db
    db.dispose()


# ---- a populated world: users, groups, canary documents, the app over HTTP ----
@dataclass(frozen=True)
class UserSpec:
    username: str
    groups: tuple[str, ...] = ()
    role: str = "user"


@dataclass(frozen=True)
class DocSpec:
    name: str
    owner: str  # username, or "system"
    visibility: Visibility
    groups: tuple[str, ...] = ()

    @property
    def canary(self) -> str:
        return f"canary{self.name.replace('_', '')}x"

    @property
    def doc_id(self) -> str:
        return f"doc-{self.name}"


DEFAULT_USERS = (UserSpec("admin", role="admin"), UserSpec("alice", ("eng",)), UserSpec("bob", ("eng", "sales")),
                 UserSpec("carol", ("sales",)), UserSpec("dave"), UserSpec("erin", ("hr",), role="viewer"))
DEFAULT_DOCS = (
    DocSpec("alice_private", "alice", "private"),
    DocSpec("alice_eng", "alice", "group", ("eng",)),
    DocSpec("bob_sales", "bob", "group", ("sales",)),
    DocSpec("bob_private", "bob", "private"),
    DocSpec("carol_private_tagged", "carol", "private", ("eng", "sales")),  # groups listed but private
    DocSpec("hr_only", "system", "group", ("hr",)),
    DocSpec("group_no_groups", "dave", "group"),
    DocSpec("public_memo", "system", "public"),
    DocSpec("system_private", "system", "private"),
)
CHUNKS_PER_DOC = 2


@dataclass
class World:
    client: TestClient
    db: MetadataDB
    store: ChunkStore
    auth: AuthService
    user_ids: dict[str, str]
    docs: tuple[DocSpec, ...]
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, username: str) -> str:
        if username not in self._tokens:
            self._tokens[username] = self.auth.login(username, PASSWORD).access_token
        return self._tokens[username]

    def headers(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}"}

    def principal(self, username: str) -> Principal:
        return self.auth.authenticate(self.token(username))

    def owner_id(self, doc: DocSpec) -> str:
        return self.user_ids.get(doc.owner, doc.owner)

    def visible(self, username: str, doc: DocSpec) -> bool:
        """The reference ACL model, judged from the DB's current view of the user."""
        return self.visible_to(self.principal(username), doc)

    def visible_to(self, principal: Principal, doc: DocSpec) -> bool:
        return reference_visible(principal, self.owner_id(doc), doc.groups, doc.visibility)


def reference_visible(p: Principal, owner_id: str, groups: Sequence[str], visibility: str) -> bool:
    if p.is_admin or owner_id == p.user_id or visibility == "public":
        return True
    return visibility == "group" and bool(set(groups) & set(p.group_ids))


def make_services(settings: Settings, db: MetadataDB, store: ChunkStore | None, *,
                  keys: KeyRing | None = None) -> Services:
    """The production graph with the real ``AuthService`` over ``db`` (``keys``: a test key ring)."""
    from tests.api_helpers import compose

    accounts = AuthService(db, settings, keys=keys)
    return compose(settings, auth=accounts, accounts=accounts, db=db, store=store)


def create_users(db: MetadataDB, specs: Sequence[UserSpec]) -> dict[str, str]:
    ids: dict[str, str] = {}
    for spec in specs:
        ids[spec.username] = users.create_user(db, spec.username, PASSWORD, role=spec.role).user_id
        for group in spec.groups:
            if group not in {g.group_id for g in users.list_groups(db)}:
                users.create_group(db, group)
            users.add_member(db, spec.username, group)
    return ids


def doc_chunks(doc: DocSpec, owner_id: str) -> list[Chunk]:
    acl = Acl(owner_id, doc.groups, doc.visibility)
    out = []
    for i in range(CHUNKS_PER_DOC):
        text_ = f"quarterly report part {i} of {doc.name}: the secret code is {doc.canary} in this report."
        content_hash = sha256_text(text_)
        out.append(Chunk(make_chunk_id(doc.doc_id, i, content_hash), doc.doc_id, f"file:///{doc.name}.txt", i,
                         text_, content_hash, {"title": doc.name}, acl))
    return out


def ingest_docs(db: MetadataDB, store: ChunkStore, docs: Sequence[DocSpec], user_ids: dict[str, str]) -> None:
    embedder = FakeEmbedder()
    for doc in docs:
        owner = user_ids.get(doc.owner, doc.owner)
        chunks = doc_chunks(doc, owner)
        store.upsert(chunks, embedder.embed([c.text for c in chunks]))
        with db.session() as s:
            s.add(DocumentRecord(doc_id=doc.doc_id, source_uri=chunks[0].source_uri, source_name=doc.name,
                                 chunk_count=len(chunks), owner_id=owner, group_ids=list(doc.groups),
                                 visibility=doc.visibility))
    store.flush()


def build_world(settings: Settings, db: MetadataDB, store: ChunkStore, *, users_: Sequence[UserSpec] = DEFAULT_USERS,
                docs: Sequence[DocSpec] = DEFAULT_DOCS) -> World:
    user_ids = create_users(db, users_)
    ingest_docs(db, store, docs, user_ids)
    services = make_services(settings, db, store)
    return World(TestClient(create_app(services)), db, store, services.auth, user_ids,  # type: ignore[arg-type]
                 tuple(docs))


@pytest.fixture
def world(make_settings, identity_db: MetadataDB, fake_store: ChunkStore) -> Iterator[World]:  # type: ignore[no-untyped-def]
    built = build_world(make_settings(), identity_db, fake_store)
    with built.client:
        yield built
