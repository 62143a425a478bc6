"""Documents whose ACLs come from their source: files owned by different Unix users and groups with different modes
(``RAG_SOURCE_ACL_MAP``), and database rows with owner / group columns. Used by ``test_source_acl`` and by the leak
suite (``test_leaks_source``).

As root the files get distinct owners and groups (``os.chown``); otherwise they all belong to the test's own account,
which the map then names, and only their modes differ. The expected ACL of a file is read from its ``stat`` by
``reference_file_acl`` — the documented rules, written again independently of the product code.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from rag_ray.api.app import create_app
from rag_ray.config import Settings
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.ingest.executor import LocalExecutor
from rag_ray.ingest.file_ingest import FileIngestor, FileIngestRequest
from rag_ray.ingest.rdb_sync import RdbIngestor, RdbSyncRequest
from rag_ray.ingest.source_acl import SourceAclMap
from rag_ray.metadata import DocumentRecord, MetadataDB
from rag_ray.sources.rdb.config import DatabaseConfig
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl
from tests.access_fixtures import DEFAULT_USERS, DocSpec, World, create_users, make_services
from tests.ingest_helpers import LocalStages

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
JOB_ACL = Acl("system", (), "private")  # the file job's own ACL: the fallback owner
ROW_JOB_ACL = Acl("system", (), "public")  # the RDB job's ACL: tables without owner/group columns


@dataclass(frozen=True)
class SourceDoc(DocSpec):
    """A canary document stamped at ingest; ``doc_id`` is the one ingest gave it."""

    source_doc_id: str = ""

    @property
    def doc_id(self) -> str:
        return self.source_doc_id


def unix_ids() -> tuple[dict[str, int], dict[str, int]]:
    """Unix account and group ids the files get (all the test's own without root)."""
    if ROOT:
        return ({"alice": 5001, "bob": 5002, "stranger": 5009},
                {"eng": 6001, "sales": 6002, "hr": 6003, "other": 6009})
    uid, gid = os.getuid(), os.getgid()
    return {"alice": uid, "bob": uid, "stranger": uid}, {"eng": gid, "sales": gid, "hr": gid, "other": gid}


def acl_map() -> dict[str, Any]:
    """The ``RAG_SOURCE_ACL_MAP`` of these tests: numeric ids, so no passwd/group entries are needed."""
    users, groups = unix_ids()
    if not ROOT:
        return {"unix_users": {str(users["alice"]): "alice"}, "unix_groups": {str(groups["eng"]): "eng"},
                "world_readable": "public"}
    return {"unix_users": {str(users["alice"]): "alice", str(users["bob"]): "bob"},
            "unix_groups": {str(groups[g]): g for g in ("eng", "sales", "hr")}, "world_readable": "public"}


def canary_text(name: str) -> str:
    canary = f"canary{name.replace('_', '')}x"
    return f"quarterly report part 0 of {name}: the secret code is {canary} in this report.\n"


def write_file(directory: Path, name: str, owner: str, group: str, mode: int) -> Path:
    users, groups = unix_ids()
    path = directory / f"{name}.txt"
    path.write_text(canary_text(name))
    if ROOT:
        os.chown(path, users[owner], groups[group])
    path.chmod(mode)
    return path


def reference_file_acl(path: Path, mapping: dict[str, Any], user_ids: dict[str, str]) -> tuple[str, tuple[str, ...],
                                                                                           str]:
    """(owner id, groups, visibility) the documented rules give the file at ``path``."""
    info = path.stat()
    owner_name = mapping["unix_users"].get(str(info.st_uid))
    owner = user_ids.get(owner_name, owner_name) if owner_name else JOB_ACL.owner_id
    group = mapping["unix_groups"].get(str(info.st_gid)) if info.st_mode & stat.S_IRGRP else None
    groups = (group,) if group else ()
    if info.st_mode & stat.S_IROTH:
        return owner, groups, "public"
    return owner, groups, "group" if groups else "private"


FILES = (  # name, owner, group, mode
    ("src_alice_private", "alice", "eng", 0o600),
    ("src_alice_eng", "alice", "eng", 0o640),
    ("src_bob_sales", "bob", "sales", 0o640),
    ("src_world", "stranger", "other", 0o644),
    ("src_stranger_other", "stranger", "other", 0o640),
    ("src_hr", "stranger", "hr", 0o660),
)
ROWS = (  # id, name, owner column, group column, expected (owner username, groups, visibility)
    (1, "row_dave_private", "dave", None, ("dave", (), "private")),
    (2, "row_carol_eng", "carol", "eng", ("carol", ("eng",), "group")),
    (3, "row_sales_hr", None, "sales, hr", ("system", ("sales", "hr"), "group")),
    (4, "row_nobody", "nobody", "", ("nobody", (), "private")),
)
MEMO = "row_memo_public"  # a table without owner/group columns: the job's ACL


def make_source_db(path: Path) -> str:
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, owner TEXT, team TEXT)"))
        conn.execute(sa.text("CREATE TABLE memos (id INTEGER PRIMARY KEY, body TEXT)"))
        for row_id, name, owner, team, _ in ROWS:
            conn.execute(sa.text("INSERT INTO notes VALUES (:id, :body, :owner, :team)"),
                         {"id": row_id, "body": canary_text(name), "owner": owner, "team": team})
        conn.execute(sa.text("INSERT INTO memos VALUES (1, :body)"), {"body": canary_text(MEMO)})
    engine.dispose()
    return url


def row_request(url: str, **kw: Any) -> RdbSyncRequest:
    values: dict[str, Any] = {"source_name": "crm", "acl": ROW_JOB_ACL, "owner_column": "owner",
                              "group_column": "team"}
    values.update(kw)
    return RdbSyncRequest(database=DatabaseConfig.from_url(url), **values)


def file_ingestor(settings: Settings, db: MetadataDB, store: ChunkStore, embedder: Any) -> FileIngestor:
    stages = LocalStages(store, embedder, enrichment_level="off")  # ACLs alone decide (no "secret" labels)
    return FileIngestor(db, store, LocalExecutor(batch_size=32), stages,
                        source_acl=SourceAclMap.from_settings(settings))


def row_ingestor(db: MetadataDB, store: ChunkStore, embedder: Any) -> RdbIngestor:
    return RdbIngestor(db, store, LocalExecutor(batch_size=64), LocalStages(store, embedder, enrichment_level="off"))


def doc_id_of(db: MetadataDB, uri_end: str) -> str:
    with db.session() as s:
        ids = [d for d, uri in s.execute(sa.select(DocumentRecord.doc_id, DocumentRecord.source_uri))
               if uri.endswith(uri_end)]
    assert len(ids) == 1, (uri_end, ids)
    return ids[0]


def build_source_world(settings: Settings, db: MetadataDB, store: ChunkStore, tmp_path: Path) -> World:
    """The leak suite's users, with canaries ingested from files and rows whose ACLs come from the source."""
    user_ids = create_users(db, DEFAULT_USERS)
    embedder = FakeEmbedder()
    files = tmp_path / "shared"
    files.mkdir()
    paths = {name: write_file(files, name, owner, group, mode) for name, owner, group, mode in FILES}
    summary = file_ingestor(settings, db, store, embedder).run(FileIngestRequest(path=files, acl=JOB_ACL))
    assert summary.status == "succeeded" and summary.files_processed == len(FILES), summary.errors
    url = make_source_db(tmp_path / "crm.sqlite")
    synced = row_ingestor(db, store, embedder).run(row_request(url))
    assert synced.status == "succeeded" and synced.rows_processed == len(ROWS) + 1, synced.errors
    store.flush()

    reverse = {v: k for k, v in user_ids.items()}
    docs: list[DocSpec] = []
    for name, path in paths.items():
        owner, groups, visibility = reference_file_acl(path, acl_map(), user_ids)
        docs.append(SourceDoc(name, reverse.get(owner, owner), visibility, groups,  # type: ignore[arg-type]
                              source_doc_id=doc_id_of(db, f"/{name}.txt")))
    for row_id, name, _owner, _team, (owner, groups, visibility) in ROWS:
        docs.append(SourceDoc(name, owner, visibility, groups,  # type: ignore[arg-type]
                              source_doc_id=doc_id_of(db, f"/notes/id={row_id}")))
    docs.append(SourceDoc(MEMO, "system", "public", (), source_doc_id=doc_id_of(db, "/memos/id=1")))
    services = make_services(settings, db, store)
    return World(TestClient(create_app(services)), db, store, services.accounts, user_ids, tuple(docs))
