"""RDB sync against real PostgreSQL and MariaDB (started by .ci/services.sh), Chinook loaded into a fresh
database per session. Skipped when RAG_TEST_POSTGRES_URL / RAG_TEST_MYSQL_URL are not set."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from rag_ray.embedding.backends import ThreadedBackend
from rag_ray.ingest.rdb_sync import RdbSyncRequest
from rag_ray.ingest.tracking import JobStore
from rag_ray.metadata import MetadataDB
from rag_ray.retrieval.service import RetrievalService
from rag_ray.sources.rdb.config import DatabaseConfig
from rag_ray.sources.rdb.introspect import inspect_tables
from rag_ray.sources.rdb.reader import ReadSpec, connectorx_rows, connectorx_sql, create_source_engine, keyset_pages
from rag_ray.sources.rdb.render import render_row, row_doc_id
from rag_ray.types import Acl, Principal
from tests.rdb_helpers import api_client, execute, ingestor, reference_ids, wait_job

pytestmark = pytest.mark.integration

PG_TABLES = ["album", "artist", "customer", "track"]
MY_TABLES = ["Album", "Artist", "Customer"]


def _server_url(var: str) -> str:
    url = os.environ.get(var)
    if not url:
        pytest.skip(f"{var} is not set (eval \"$(bash .ci/services.sh)\")")
    return url


def _chinook_script(shared_data: Path, name: str, drop: str) -> str:
    sql = (shared_data / "chinook" / name).read_text(encoding="utf-8-sig")
    return re.sub(drop, "", sql, flags=re.MULTILINE)  # the scripts create and enter their own database


def _fresh_database(admin_url: str, create: str) -> str:
    name = f"rag_test_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(create.format(name=name)))
    engine.dispose()
    return name


def _drop_database(admin_url: str, name: str) -> None:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
    engine.dispose()


@pytest.fixture(scope="session")
def pg_chinook(shared_data: Path) -> Iterator[str]:
    admin = _server_url("RAG_TEST_POSTGRES_URL")
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    name = _fresh_database(admin, "CREATE DATABASE {name}")
    url = make_url(admin).set(database=name)
    script = _chinook_script(shared_data, "Chinook_PostgreSql.sql", r"^(DROP DATABASE|CREATE DATABASE|\\c ).*$")
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", plain], input=script, text=True, check=True,
                   capture_output=True, timeout=300)
    yield url.render_as_string(hide_password=False)
    _drop_database(admin, name)


@pytest.fixture(scope="session")
def my_chinook(shared_data: Path) -> Iterator[str]:
    admin = _server_url("RAG_TEST_MYSQL_URL")
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        pytest.skip("the mariadb client is not installed")
    name = _fresh_database(admin, "CREATE DATABASE {name} CHARACTER SET utf8mb4")
    url = make_url(admin).set(database=name)
    script = _chinook_script(shared_data, "Chinook_MySql.sql", r"^(DROP DATABASE|CREATE DATABASE|USE ).*$")
    subprocess.run([client, "--protocol=tcp", "-h", url.host or "127.0.0.1", "-P", str(url.port or 3306),
                    "-u", url.username or "", f"-p{url.password}", "--default-character-set=utf8mb4", name],
                   input=script, text=True, check=True, capture_output=True, timeout=300)
    yield url.render_as_string(hide_password=False)
    _drop_database(admin, name)


@pytest.fixture
def db(tmp_path: Path) -> MetadataDB:
    return MetadataDB(f"sqlite:///{tmp_path / 'meta.sqlite'}")


def _request(url: str, tables: list[str], **kw: object) -> RdbSyncRequest:
    values: dict[str, object] = {"source_name": "chinook", "include_tables": tables, "acl": Acl("system", (), "public"),
                                 "batch_size": 1000}
    values.update(kw)
    return RdbSyncRequest(database=DatabaseConfig.from_url(url), **values)  # type: ignore[arg-type]


def _expected_docs(url: str, table: str, key: str) -> set[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        keys = [r[0] for r in conn.execute(sa.select(sa.column(key)).select_from(sa.table(table)))]
    engine.dispose()
    return {row_doc_id("chinook", table, {key: k}) for k in keys}


def test_postgres_full_then_incremental_sync(pg_chinook, db, fake_store, milvus_uri, tmp_path):
    sync = ingestor(db, fake_store)
    first = sync.run(_request(pg_chinook, PG_TABLES))
    assert first.status == "succeeded" and first.errors == []
    assert first.rows_processed == 347 + 275 + 59 + 3503
    expected = set().union(*(_expected_docs(pg_chinook, t, f"{t}_id") for t in PG_TABLES))
    assert {r["doc_id"] for r in fake_store.query("", ("doc_id",))} == expected

    execute(pg_chinook, "ALTER TABLE album ADD COLUMN updated_at timestamptz NOT NULL DEFAULT '2024-01-01'",
            "ALTER TABLE customer ADD COLUMN updated_at timestamptz NOT NULL DEFAULT '2024-01-01'")
    incremental = _request(pg_chinook, PG_TABLES, mode="incremental", incremental_column="updated_at")
    baseline = sync.run(incremental)  # the new column changed every row's text: all re-embedded once
    assert baseline.rows_processed == 347 + 59 and baseline.rows_skipped == 275 + 3503

    execute(pg_chinook,
            "UPDATE album SET title = 'Back in Black (Remastered)', updated_at = '2024-06-01' WHERE album_id = 4",
            "UPDATE customer SET city = 'Berlin', updated_at = '2024-06-01' WHERE customer_id = 2",
            "INSERT INTO album (album_id, title, artist_id, updated_at) VALUES (9001, 'Fresh Album', 1, '2024-06-02')",
            "DELETE FROM customer WHERE customer_id = 59 AND NOT EXISTS (SELECT 1 FROM invoice WHERE customer_id = 59)",
            "DELETE FROM invoice_line WHERE invoice_id IN (SELECT invoice_id FROM invoice WHERE customer_id = 58)",
            "DELETE FROM invoice WHERE customer_id = 58", "DELETE FROM customer WHERE customer_id = 58")
    after = sync.run(incremental)
    tables = {t.table: t for t in after.tables}
    assert (tables["album"].rows_changed, tables["customer"].rows_changed, tables["customer"].rows_deleted) == (
        2, 1, 1)
    assert tables["album"].rows_unchanged == 346  # ">=": rows at the old watermark (all of them) are read again
    quiet = {t.table: t for t in sync.run(incremental).tables}
    # now only the rows at the new watermarks are read: album 9001 (2024-06-02) and customer 2 (2024-06-01)
    assert (quiet["album"].rows_unchanged, quiet["customer"].rows_unchanged) == (1, 1)
    assert quiet["track"].rows_unchanged == 3503  # no watermark column: read in full, skipped by hash
    assert fake_store.ids_where("") == reference_ids(milvus_uri, tmp_path, _request(pg_chinook, PG_TABLES))


def test_postgres_connectorx_and_keyset_pages_render_identically(pg_chinook):
    config = DatabaseConfig.from_url(pg_chinook)
    engine = create_source_engine(config)
    for table in inspect_tables(engine, include=["invoice", "track", "playlist_track"], row_counts=False):
        spec = ReadSpec(table)
        fast = connectorx_rows(config.connectorx_url() or "", connectorx_sql(config, spec) or "",
                               partition_on=table.integer_key, partition_num=2)
        paged = [r for page in keyset_pages(engine, spec, 700) for r in page]
        key = table.primary_key
        fast.sort(key=lambda r: [r[k] for k in key])
        assert [render_row(table.name, r, table.column_names) for r in fast] == [
            render_row(table.name, r, table.column_names) for r in paged]
    engine.dispose()


def test_mariadb_sync_on_ray_data(my_chinook, make_settings, ray_local, recwarn):
    """A full sync in parallel Ray tasks, then a re-sync that skips every row and starts one embedding actor, not
    one per partition (Ray Data warned that the second had no input)."""
    from jobs.sync_rdb import run_rdb_job
    from rag_ray.runtime import Runtime

    settings = make_settings()
    request = _request(my_chinook, ["Album", "Artist"], batch_size=100)  # 7 partitions → parallel Ray tasks
    first = run_rdb_job(settings, request)
    assert first.status == "succeeded" and first.rows_processed == 347 + 275 and first.errors == []
    with Runtime(settings) as runtime:
        ids = runtime.store.ids_where("")
        assert len(ids) == 622
        again = run_rdb_job(settings, request)
        assert (again.rows_processed, again.rows_skipped) == (0, 622)
        assert runtime.store.ids_where("") == ids
        job = JobStore(runtime.db).get(again.job_id)
        assert (job.items_total, job.items_skipped, job.status) == (622, 622, "succeeded")
    assert not [w for w in recwarn if "minimum number of concurrent actors" in str(w.message)]


def test_mariadb_rows_are_retrievable_by_question(my_chinook, db, milvus_uri, collection_name, local_embedder):
    from rag_ray.store.milvus import ChunkStore

    store = ChunkStore.connect(milvus_uri, collection_name, local_embedder.dimension)
    try:
        summary = ingestor(db, store, local_embedder).run(_request(my_chinook, MY_TABLES))
        assert summary.status == "succeeded"
        retrieval = RetrievalService(store, ThreadedBackend(local_embedder))
        cases = {"Which customer lives in Stuttgart, Germany?": ("Customer", {"CustomerId": 2}),
                 "the album titled Let There Be Rock": ("Album", {"AlbumId": 4})}
        for question, (table, key) in cases.items():
            hits = asyncio.run(retrieval.search(Principal("reader"), question, k=3))
            assert row_doc_id("chinook", table, key) in [h.doc_id for h in hits], (question, [h.text for h in hits])
            assert hits[0].metadata["table"] == table
    finally:
        store.drop()


def test_api_extract_rdb_with_an_allowed_postgres_host(pg_chinook, make_settings, fake_store):
    url = make_url(pg_chinook)
    settings = make_settings(rdb_allowed_hosts=[f"{url.host}:{url.port}"])
    db = MetadataDB(settings.metadata_url)
    client = api_client(settings, db, fake_store)
    body = {"database_config": {"host": url.host, "port": url.port, "database": url.database, "user": url.username,
                                "password": url.password, "database_type": "postgresql"},
            "extraction_config": {"mode": "full", "batch_size": 200, "include_tables": ["artist", "genre"],
                                  "validate_data": True}}
    r = client.post("/extract/rdb", headers={"Authorization": "Bearer admin-token"}, json=body)
    assert r.status_code == 202, r.text
    job = wait_job(db, r.json()["job_id"])
    assert (job.status, job.items_total, job.chunks_done, job.errors_count) == ("succeeded", 275 + 25, 300, 0)
    with db.session() as s:
        from rag_ray.metadata import JobRecord

        params = s.get(JobRecord, job.job_id).params  # type: ignore[union-attr]
    assert url.password and url.password not in str(params) and params["database"]["url"].count("***") == 1
    inspected = client.post("/extract/rdb/inspect", headers={"Authorization": "Bearer admin-token"},
                            json={"database_config": body["database_config"], "include_tables": ["album"]}).json()
    [album] = inspected["tables"]
    assert album["primary_key"] == ["album_id"] and album["row_count"] >= 347
    assert album["foreign_keys"] == [{"columns": ["artist_id"], "referred_table": "artist",
                                      "referred_columns": ["artist_id"]}]
