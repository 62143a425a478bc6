"""RDB sync end to end on the Chinook SQLite file: real SQLite, real Milvus Lite, fake embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from rag_ray.ingest.rdb_sync import RdbSyncRequest
from rag_ray.ingest.tracking import JobStore
from rag_ray.metadata import MetadataDB
from rag_ray.sources.rdb.config import DatabaseConfig
from rag_ray.sources.rdb.introspect import inspect_tables
from rag_ray.sources.rdb.reader import ReadSpec, connectorx_rows, connectorx_sql, create_source_engine, keyset_pages
from rag_ray.sources.rdb.render import render_row, row_doc_id
from rag_ray.sources.rdb.state import RdbSource, RdbSyncState, add_source, due_sources, get_source, list_sources
from rag_ray.store.filters import literal
from rag_ray.types import Acl
from tests.rdb_helpers import E2E_TABLES, api_client, chinook_sqlite, execute, ingestor, reference_ids, wait_job


@pytest.fixture
def chinook(tmp_path: Path, shared_data: Path) -> Path:
    return chinook_sqlite(shared_data, tmp_path)


@pytest.fixture
def db(tmp_path: Path) -> MetadataDB:
    return MetadataDB(f"sqlite:///{tmp_path / 'meta.sqlite'}")


def request_for(path: Path, **kw: object) -> RdbSyncRequest:
    values: dict[str, object] = {"source_name": "chinook", "include_tables": list(E2E_TABLES),
                                 "acl": Acl("system", (), "public")}
    values.update(kw)
    return RdbSyncRequest(database=DatabaseConfig.from_url(f"sqlite:///{path}"), **values)  # type: ignore[arg-type]


def doc_ids_of(url: str, table: str, key: str) -> set[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        keys = [r[0] for r in conn.execute(sa.text(f'SELECT "{key}" FROM "{table}"'))]
    engine.dispose()
    return {row_doc_id("chinook", table, {key: k}) for k in keys}


def test_full_sync_writes_one_document_per_row_and_rerun_changes_nothing(chinook, db, fake_store):
    sync = ingestor(db, fake_store)
    first = sync.run(request_for(chinook))
    assert first.status == "succeeded" and first.errors == []
    assert {t.table: t.rows_changed for t in first.tables} == {"Album": 347, "Artist": 275, "Customer": 59,
                                                               "Track": 3503}
    stored = {r["doc_id"] for r in fake_store.query("", ("doc_id",))}
    url = f"sqlite:///{chinook}"
    expected = set().union(*(doc_ids_of(url, t, f"{t}Id") for t in E2E_TABLES))
    assert stored == expected
    ids = fake_store.ids_where("")
    assert len(ids) == first.chunks_written == 4184

    again = sync.run(request_for(chinook))
    assert (again.rows_processed, again.rows_skipped, again.chunks_written, again.rows_deleted) == (0, 4184, 0, 0)
    assert fake_store.ids_where("") == ids
    job = JobStore(db).get(again.job_id)
    assert (job.status, job.items_total, job.items_skipped) == ("succeeded", 4184, 4184)


def test_chunks_carry_row_provenance_and_text(chinook, db, fake_store):
    ingestor(db, fake_store).run(request_for(chinook, include_tables=["Album"],
                                             metadata_columns={"Album": ["ArtistId"]}))
    doc_id = row_doc_id("chinook", "Album", {"AlbumId": 4})
    [row] = fake_store.query(f"doc_id == {literal(doc_id)}", ("text", "metadata", "source_type", "source_uri"))
    assert row["text"] == "table: Album\nAlbumId: 4\nTitle: Let There Be Rock\nArtistId: 1"
    assert row["source_type"] == "rdb" and row["source_uri"] == "rdb://chinook/Album/AlbumId=4"
    meta = row["metadata"]
    assert (meta["table"], meta["primary_key"], meta["database"]) == ("Album", {"AlbumId": 4}, str(chinook))
    assert meta["columns"] == {"ArtistId": 1} and len(meta["row_hash"]) == 64


def test_incremental_sync_applies_updates_inserts_and_deletes(chinook, db, fake_store, milvus_uri, tmp_path):
    url = f"sqlite:///{chinook}"
    execute(url, "ALTER TABLE Album ADD COLUMN updated_at TEXT", "UPDATE Album SET updated_at = '2024-01-01 00:00:00'")
    request = request_for(chinook, include_tables=["Album", "Artist"], mode="incremental",
                          incremental_column="updated_at", batch_size=100)
    sync = ingestor(db, fake_store)
    first = sync.run(request)
    assert first.status == "succeeded" and first.rows_processed == 347 + 275
    assert {t.table: t.mode for t in first.tables} == {"Album": "incremental", "Artist": "full"}
    before = fake_store.ids_where("")

    execute(url,
            "UPDATE Album SET Title = 'Let There Be More Rock', updated_at = '2024-02-01 00:00:00' WHERE AlbumId = 4",
            "UPDATE Album SET Title = 'Silent edit', updated_at = '2023-01-01 00:00:00' WHERE AlbumId = 5",
            "INSERT INTO Album (AlbumId, Title, ArtistId, updated_at) VALUES (1000, 'Brand New', 1, "
            "'2024-03-01 00:00:00'), (1001, 'Brand Newer', 2, '2024-03-01 00:00:00')",
            "DELETE FROM Album WHERE AlbumId IN (10, 11)",
            "UPDATE Artist SET Name = 'AC/DC (band)' WHERE ArtistId = 1", "DELETE FROM Artist WHERE ArtistId = 275")
    second = sync.run(request)
    album = next(t for t in second.tables if t.table == "Album")
    artist = next(t for t in second.tables if t.table == "Artist")
    # the watermark reads only rows at/after it: AlbumId 5's back-dated edit is not seen
    assert (album.rows_changed, album.rows_deleted, album.rows_unchanged) == (3, 2, 347 - 2 - 1 - 1)
    assert (artist.rows_changed, artist.rows_deleted) == (1, 1)
    after = fake_store.ids_where("")
    assert after != before
    stale_album5 = fake_store.query(f"doc_id == {literal(row_doc_id('chinook', 'Album', {'AlbumId': 5}))}",
                                    ("text",))
    assert "Title: Big Ones" in stale_album5[0]["text"]

    third = sync.run(request_for(chinook, include_tables=["Album", "Artist"]))  # a full sync catches up
    assert third.rows_processed == 1
    assert fake_store.ids_where("") == reference_ids(milvus_uri, tmp_path, request_for(
        chinook, include_tables=["Album", "Artist"]))
    # the full sync without an incremental column left the watermark alone
    assert [(r.table_name, r.watermark_column, r.watermark) for r in _states(db)] == [
        ("Album", "updated_at", '{"t": "plain", "v": "2024-03-01 00:00:00"}')]


def _states(db: MetadataDB) -> list[RdbSyncState]:
    with db.session() as s:
        return list(s.scalars(sa.select(RdbSyncState)))


def test_validate_data_reports_bad_rows_and_keeps_going(chinook, db, fake_store):
    execute(f"sqlite:///{chinook}", "UPDATE Track SET Milliseconds = 'three minutes' WHERE TrackId = 5",
            "UPDATE Track SET Name = hex(zeroblob(125)) WHERE TrackId = 6")  # 250 chars
    summary = ingestor(db, fake_store).run(request_for(chinook, include_tables=["Track"], validate_data=True,
                                                             max_rows=200))
    assert summary.status == "succeeded"
    assert sorted(e["item"] for e in summary.errors) == ["rdb://chinook/Track/TrackId=5",
                                                        "rdb://chinook/Track/TrackId=6"]
    assert "Milliseconds: expected int" in summary.errors[0]["error"]
    assert "Name: 250 characters, longer than NVARCHAR(200)" in summary.errors[1]["error"]
    assert summary.rows_processed == 200 - 2
    job = JobStore(db).get(summary.job_id)
    assert job.errors_count == 2 and {e["item"] for e in job.errors} == {e["item"] for e in summary.errors}


def test_max_rows_exclude_and_content_columns(chinook, db, fake_store):
    summary = ingestor(db, fake_store).run(request_for(
        chinook, include_tables=[], exclude_tables=["Track", "InvoiceLine", "PlaylistTrack", "Invoice"],
        max_rows=10, content_columns={"Customer": ["FirstName", "LastName", "City"]}))
    assert {t.table for t in summary.tables} == {"Album", "Artist", "Customer", "Employee", "Genre", "MediaType",
                                                 "Playlist"}
    assert all(t.rows_changed == min(t.rows_total, 10) for t in summary.tables)
    [row] = fake_store.query(f"doc_id == {literal(row_doc_id('chinook', 'Customer', {'CustomerId': 2}))}",
                             ("text",))
    assert row["text"] == "table: Customer\nFirstName: Leonie\nLastName: Köhler\nCity: Stuttgart"


def test_unknown_table_and_bad_requests_are_named(chinook, db, fake_store):
    from rag_ray.errors import InvalidInput

    sync = ingestor(db, fake_store)
    with pytest.raises(InvalidInput) as err:
        sync.run(request_for(chinook, include_tables=["Nope"]))
    assert err.value.field == "include_tables"
    with pytest.raises(InvalidInput) as err:
        sync.run(request_for(chinook, mode="incremental"))
    assert err.value.field == "incremental_column"
    with pytest.raises(InvalidInput) as err:
        RdbSyncRequest(database=DatabaseConfig.from_url(f"sqlite:///{chinook.parent / 'missing.db'}"))
        create_source_engine(DatabaseConfig.from_url(f"sqlite:///{chinook.parent / 'missing.db'}"))
    assert err.value.field == "database"


def test_connectorx_and_sqlalchemy_render_rows_identically(chinook):
    config = DatabaseConfig.from_url(f"sqlite:///{chinook}")
    engine = create_source_engine(config)
    for table in inspect_tables(engine, include=["Invoice", "Track", "PlaylistTrack"], row_counts=False):
        spec = ReadSpec(table)
        arrow_rows = connectorx_rows(config.connectorx_url() or "", connectorx_sql(config, spec) or "",
                                     partition_on=table.integer_key, partition_num=2)
        paged = [r for page in keyset_pages(engine, spec, 500) for r in page]
        key = table.primary_key
        as_text = [render_row(table.name, r, table.column_names) for r in sorted(arrow_rows, key=lambda r: [
            r[k] for k in key])]
        assert as_text == [render_row(table.name, r, table.column_names) for r in paged]
    engine.dispose()


def test_named_sources_store_the_url_encrypted(chinook, db):
    from rag_ray.sources.rdb.state import NamedSource

    pg = DatabaseConfig(host="db.internal", database="shop", user="reader", password="s3cret-pw",  # type: ignore[arg-type]
                        database_type="postgresql")
    add_source(db, "server-secret", NamedSource("shop", pg, Acl("u1", ("g1",), "group"), {"mode": "full"}, 3600))
    add_source(db, "server-secret", NamedSource("local", DatabaseConfig.from_url(f"sqlite:///{chinook}")))
    with db.session() as s:
        raw = [r.url_encrypted + r.url_masked for r in s.scalars(sa.select(RdbSource))]
    assert all("s3cret-pw" not in r for r in raw)
    shop = get_source(db, "server-secret", "shop")
    assert shop.config.connect_url() == "postgresql+psycopg://reader:s3cret-pw@db.internal:5432/shop"
    assert shop.acl == Acl("u1", ("g1",), "group")
    assert [s.name for s in list_sources(db, "server-secret")] == ["local", "shop"]
    assert [s.name for s in due_sources(db, "server-secret")] == ["shop"]
    request = RdbSyncRequest.from_source(shop, mode="incremental")
    assert (request.mode, request.source, request.acl.visibility) == ("incremental", "shop", "group")


def test_api_extract_rdb_named_sqlite_source_runs_in_background(chinook, make_settings, fake_store):
    settings = make_settings()
    db = MetadataDB(settings.metadata_url)
    add_source(db, settings.jwt_secret(), _named(chinook))
    client = api_client(settings, db, fake_store)
    admin = {"Authorization": "Bearer admin-token"}
    r = client.post("/extract/rdb", headers=admin, json={"source": "chinook", "extraction_config": {
        "mode": "full", "include_tables": ["Artist"], "batch_size": 100}})
    assert r.status_code == 202, r.text
    job = wait_job(db, r.json()["job_id"])
    assert (job.status, job.items_total, job.chunks_done) == ("succeeded", 275, 275)
    assert fake_store.count() == 275

    schema = client.get("/extract/rdb/inspect", params={"source": "chinook"}, headers=admin).json()
    assert [t["name"] for t in schema["tables"]] == ["Artist"] and schema["tables"][0]["row_count"] == 275
    assert client.get("/extract/rdb/sources", headers=admin).json()["count"] == 1


def _named(chinook: Path):  # type: ignore[no-untyped-def]
    from rag_ray.sources.rdb.state import NamedSource

    return NamedSource("chinook", DatabaseConfig.from_url(f"sqlite:///{chinook}"), Acl("system", (), "public"),
                       {"include_tables": ["Artist"]})


def test_api_refuses_files_unlisted_hosts_and_non_admins(chinook, make_settings, fake_store):
    settings = make_settings(rdb_allowed_hosts=["db.internal:5432"])
    db = MetadataDB(settings.metadata_url)
    client = api_client(settings, db, fake_store)
    admin = {"Authorization": "Bearer admin-token"}
    body = {"database_config": {"database_type": "sqlite", "database": str(chinook)}}
    r = client.post("/extract/rdb", headers=admin, json=body)
    assert r.status_code == 422 and r.json()["field"] == "database_config.database_type"
    r = client.post("/extract/rdb", headers=admin, json={"database_config": {"url": f"sqlite:///{chinook}"}})
    assert r.status_code == 422
    pg = {"host": "evil.example", "port": 5432, "database": "x", "user": "u", "password": "hunter22",
          "database_type": "postgresql"}
    r = client.post("/extract/rdb", headers=admin, json={"database_config": pg})
    assert r.status_code == 403 and r.json()["field"] == "database_config.host" and "hunter22" not in r.text
    r = client.post("/extract/rdb", headers=admin, json={"database_config": {**pg, "host": "db.internal",
                                                                              "port": 6543}})
    assert r.status_code == 403
    r = client.post("/extract/rdb/inspect", headers=admin, json={"database_config": pg})
    assert r.status_code == 403
    r = client.post("/extract/rdb", headers={"Authorization": "Bearer alice-token"}, json={"database_config": pg})
    assert r.status_code == 403
    assert json.loads(client.get("/extract/rdb/sources", headers=admin).text)["count"] == 0
