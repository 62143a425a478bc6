"""`rag-cli database backup` then `restore` into an empty data dir: same users, same chunk ids and vectors."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from rag_ray.access import users
from rag_ray.access.service import AuthService
from rag_ray.cli import database
from rag_ray.cli.context import CliContext
from rag_ray.metadata import MetadataDB
from rag_ray.store.milvus import ChunkStore
from tests.access_fixtures import DEFAULT_DOCS, DEFAULT_USERS, PASSWORD, create_users, ingest_docs

runner = CliRunner()


def invoke(settings: Any, *args: str) -> Any:
    result = runner.invoke(database.app, list(args), obj=CliContext(settings=settings))
    assert result.exit_code == 0, result.output
    return result


def snapshot(store: ChunkStore) -> dict[str, tuple[Any, ...]]:
    rows = store.query("", ("id", "doc_id", "text", "owner_id", "group_ids", "visibility", "vector"))
    return {r["id"]: (r["doc_id"], r["text"], r["owner_id"], tuple(r["group_ids"]), r["visibility"],
                      tuple(np.round(np.asarray(r["vector"], dtype=np.float32), 6))) for r in rows}


def test_backup_and_restore_into_an_empty_data_dir(make_settings: Any, fake_store: ChunkStore,
                                                   tmp_path: Path) -> None:
    source = make_settings()
    db = MetadataDB(source.metadata_url)
    ids = create_users(db, DEFAULT_USERS)
    key = users.create_api_key(db, "alice").key
    ingest_docs(db, fake_store, DEFAULT_DOCS, ids)
    before_users = [u.to_dict() for u in users.list_users(db)]
    db.dispose()
    before_chunks = snapshot(fake_store)

    archive = tmp_path / "backup.tar.gz"
    invoke(source, "backup", "--output", str(archive))
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest["chunks"] == len(before_chunks) and manifest["tables"]["users"] == len(before_users)

    target = make_settings(data_dir=tmp_path / "restored", collection=source.collection + "_r")
    invoke(target, "restore", str(archive))
    restored_db = MetadataDB(target.metadata_url)
    try:
        assert [u.to_dict() for u in users.list_users(restored_db)] == before_users
        auth = AuthService(restored_db, target)
        assert auth.login("alice", PASSWORD).access_token
        assert auth.authenticate(key).group_ids == ("eng",)
        restored = ChunkStore.connect(target.milvus_address, target.collection, fake_store.dimension)
        assert snapshot(restored) == before_chunks
        hits = restored.search(text="canarypublicmemox", k=1, strategy="sparse")  # BM25 rebuilt on upsert
        assert hits and hits[0].doc_id == "doc-public_memo"
        again = runner.invoke(database.app, ["restore", str(archive)], obj=CliContext(settings=target))
        assert again.exit_code == 1 and "not empty" in again.output
        invoke(target, "restore", "--input", str(archive), "--replace")
        assert snapshot(restored) == before_chunks
        restored.drop()
    finally:
        restored_db.dispose()
