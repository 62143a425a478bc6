"""Permissions from the source: a file's owner, group and mode and a row's owner / group columns become its chunks'
ACL; a change at the source reaches the chunks on the next sync — a file re-stamped without re-embedding, a row
written again with its new ACL — including through ``POST /extract/rdb`` with ``owner_column`` / ``group_column``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.errors import ConfigError
from rag_ray.ingest.file_ingest import FileIngestRequest
from rag_ray.ingest.file_jobs import upload_request
from rag_ray.ingest.source_acl import SourceAclMap
from rag_ray.metadata import DocumentRecord, JobRecord, MetadataDB
from rag_ray.sources.rdb.config import DatabaseConfig
from rag_ray.sources.rdb.state import NamedSource, add_source
from rag_ray.store.filters import literal
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Principal
from tests.access_fixtures import DEFAULT_USERS, create_users
from tests.guard_helpers import build_rig
from tests.rdb_helpers import execute, wait_job
from tests.source_acl_fixtures import (
    FILES,
    JOB_ACL,
    MEMO,
    ROOT,
    ROW_JOB_ACL,
    ROWS,
    acl_map,
    doc_id_of,
    file_ingestor,
    make_source_db,
    reference_file_acl,
    row_ingestor,
    row_request,
    unix_ids,
    write_file,
)

pytest_plugins = ["tests.access_fixtures"]


def chunk_acls(store: ChunkStore, doc_id: str) -> set[tuple[str, tuple[str, ...], str]]:
    rows = store.query(f"doc_id == {literal(doc_id)}", ("id", "owner_id", "group_ids", "visibility"))
    assert rows, doc_id
    return {(r["owner_id"], tuple(r["group_ids"]), r["visibility"]) for r in rows}


def manifest_acl(db: MetadataDB, doc_id: str) -> tuple[str, tuple[str, ...], str]:
    with db.session() as s:
        record = s.get(DocumentRecord, doc_id)
        assert record is not None
        return record.owner_id, tuple(record.group_ids), record.visibility


def chunk_ids(store: ChunkStore, doc_id: str) -> set[str]:
    return store.ids_where(f"doc_id == {literal(doc_id)}")


def test_files_take_owner_group_and_mode_and_are_restamped_without_reembedding(
        tmp_path: Path, make_settings: Any, identity_db: MetadataDB, fake_store: ChunkStore) -> None:
    user_ids = create_users(identity_db, DEFAULT_USERS)
    settings = make_settings(source_acl_map=acl_map())
    embedder = FakeEmbedder()
    ingestor = file_ingestor(settings, identity_db, fake_store, embedder)
    folder = tmp_path / "share"
    folder.mkdir()
    paths = {name: write_file(folder, name, owner, group, mode) for name, owner, group, mode in FILES}
    first = ingestor.run(FileIngestRequest(path=folder, acl=JOB_ACL))
    assert first.status == "succeeded" and first.files_processed == len(FILES)
    docs = {name: doc_id_of(identity_db, f"/{name}.txt") for name in paths}
    for name, path in paths.items():
        expected = reference_file_acl(path, acl_map(), user_ids)
        assert chunk_acls(fake_store, docs[name]) == {expected}, name
        assert manifest_acl(identity_db, docs[name]) == expected
    alice = user_ids["alice"]
    assert chunk_acls(fake_store, docs["src_alice_private"]) == {(alice, (), "private")}
    assert chunk_acls(fake_store, docs["src_alice_eng"]) == {(alice, ("eng",), "group")}
    assert {v for _, _, v in chunk_acls(fake_store, docs["src_world"])} == {"public"}
    if ROOT:
        assert chunk_acls(fake_store, docs["src_bob_sales"]) == {(user_ids["bob"], ("sales",), "group")}
        assert chunk_acls(fake_store, docs["src_stranger_other"]) == {("system", (), "private")}  # nothing widened

    # at the source: alice opens her private file to her group; (root:) the eng file moves to the sales group
    paths["src_alice_private"].chmod(0o640)
    changed = ["src_alice_private"]
    if ROOT:
        _, groups = unix_ids()
        import os

        os.chown(paths["src_alice_eng"], -1, groups["sales"])
        changed.append("src_alice_eng")
    ids_before = {name: chunk_ids(fake_store, doc) for name, doc in docs.items()}
    embedded = embedder.calls
    second = ingestor.run(FileIngestRequest(path=folder, acl=JOB_ACL))
    assert (second.files_restamped, second.files_processed, second.chunks_written) == (len(changed), 0, 0)
    assert embedder.calls == embedded  # nothing parsed or embedded again
    assert {name: chunk_ids(fake_store, doc) for name, doc in docs.items()} == ids_before
    assert chunk_acls(fake_store, docs["src_alice_private"]) == {(alice, ("eng",), "group")}
    if ROOT:
        assert chunk_acls(fake_store, docs["src_alice_eng"]) == {(alice, ("sales",), "group")}
    for name in changed:
        assert manifest_acl(identity_db, docs[name]) == reference_file_acl(paths[name], acl_map(), user_ids)
    third = ingestor.run(FileIngestRequest(path=folder, acl=JOB_ACL))
    assert (third.files_restamped, third.files_processed, third.files_skipped) == (0, 0, len(FILES))


def test_uploads_and_unset_map_keep_the_requested_acl(tmp_path: Path, make_settings: Any) -> None:
    upload = upload_request(tmp_path / "a.txt", Principal("u1", "u1"), ("g1",), "group")
    assert upload.acl_from_source is False and upload.describe()["acl_from_source"] is False
    assert SourceAclMap.from_settings(make_settings()) is None
    with pytest.raises(ConfigError) as bad:
        SourceAclMap.from_settings(make_settings(source_acl_map={"unix_group": {"eng": "eng"}}))
    assert bad.value.field == "RAG_SOURCE_ACL_MAP"
    with pytest.raises(ConfigError):
        SourceAclMap.from_settings(make_settings(source_acl_map={"world_readable": "group"}))


def test_upload_requests_ignore_the_map(tmp_path: Path, make_settings: Any, identity_db: MetadataDB,
                                        fake_store: ChunkStore) -> None:
    settings = make_settings(source_acl_map=acl_map())
    folder = tmp_path / "uploads"
    folder.mkdir()
    path = write_file(folder, "uploaded", "alice", "eng", 0o644)  # world-readable on disk
    request = upload_request(path, Principal("u_dave", "dave"), (), "private")
    assert file_ingestor(settings, identity_db, fake_store, FakeEmbedder()).run(request).files_processed == 1
    assert chunk_acls(fake_store, doc_id_of(identity_db, "/uploaded.txt")) == {("u_dave", (), "private")}


def test_rows_take_owner_and_group_columns_and_are_restamped_when_they_change(
        tmp_path: Path, identity_db: MetadataDB, fake_store: ChunkStore) -> None:
    user_ids = create_users(identity_db, DEFAULT_USERS)
    url = make_source_db(tmp_path / "crm.sqlite")
    ingestor = row_ingestor(identity_db, fake_store, FakeEmbedder())
    first = ingestor.run(row_request(url))
    assert first.status == "succeeded" and first.rows_processed == len(ROWS) + 1, first.errors
    docs = {row_id: doc_id_of(identity_db, f"/notes/id={row_id}") for row_id, *_ in ROWS}
    for row_id, name, _owner, _team, (owner, groups, visibility) in ROWS:
        expected = (user_ids.get(owner, owner), groups, visibility)
        assert chunk_acls(fake_store, docs[row_id]) == {expected}, name
        assert manifest_acl(identity_db, docs[row_id]) == expected
    memo = doc_id_of(identity_db, "/memos/id=1")
    assert chunk_acls(fake_store, memo) == {(ROW_JOB_ACL.owner_id, (), "public")}  # no owner/group columns

    execute(url, "UPDATE notes SET owner = 'bob' WHERE id = 1", "UPDATE notes SET team = 'sales' WHERE id = 2")
    second = ingestor.run(row_request(url))
    assert (second.rows_processed, second.rows_skipped) == (2, len(ROWS) - 1)
    assert chunk_acls(fake_store, docs[1]) == {(user_ids["bob"], (), "private")}
    assert chunk_acls(fake_store, docs[2]) == {(user_ids["carol"], ("sales",), "group")}
    assert manifest_acl(identity_db, docs[1]) == (user_ids["bob"], (), "private")

    unchanged = ingestor.run(row_request(url))
    assert (unchanged.rows_processed, unchanged.rows_skipped) == (0, len(ROWS) + 1)
    plain = ingestor.run(row_request(url, owner_column=None, group_column=None))  # columns dropped: the job's ACL
    assert plain.rows_processed == len(ROWS)
    assert chunk_acls(fake_store, docs[1]) == {(ROW_JOB_ACL.owner_id, (), "public")}


def test_extract_rdb_takes_owner_and_group_columns(tmp_path: Path, make_settings: Any, fake_store: ChunkStore) -> None:
    settings = make_settings(enrichment_level="off")
    identity_db = MetadataDB(settings.metadata_url)  # the background job opens the settings' metadata DB
    rig = build_rig(settings, identity_db, fake_store)
    try:
        url = make_source_db(tmp_path / "crm.sqlite")
        add_source(identity_db, settings.jwt_secret(), NamedSource("crm", DatabaseConfig.from_url(url),
                                                                  Acl("system", (), "public")))
        response = rig.client.post("/extract/rdb", headers=rig.headers("admin"), json={
            "source": "crm", "extraction_config": {"mode": "full", "owner_column": "owner", "group_column": "team"}})
        assert response.status_code == 202, response.text
        job = wait_job(identity_db, response.json()["job_id"])
        assert job.status == "succeeded", job.message
        with identity_db.session() as s:
            params = s.get(JobRecord, response.json()["job_id"]).params  # type: ignore[union-attr]
        assert (params["owner_column"], params["group_column"]) == ("owner", "team")
        carol_eng = doc_id_of(identity_db, "/notes/id=2")
        assert chunk_acls(fake_store, carol_eng) == {(rig.user_ids["carol"], ("eng",), "group")}
        search = {"query": "quarterly report secret code", "mode": "search", "k": 20}
        seen = {who: rig.client.post("/query", headers=rig.headers(who), json=search).text
                for who in ("alice", "carol", "dave", "erin")}
        canary = "canaryrowcarolengx"
        assert canary in seen["alice"] and canary in seen["carol"]  # eng member; owner
        assert canary not in seen["dave"] and canary not in seen["erin"]
        assert "canaryrowdaveprivatex" in seen["dave"] and "canaryrowdaveprivatex" not in seen["alice"]
        assert MEMO.replace("_", "") in seen["erin"]  # the memos table: the job's public ACL
    finally:
        rig.close()
        identity_db.dispose()
