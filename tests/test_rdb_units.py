"""RDB building blocks without a database: connection config, compiled SQL for all six dialects,
rendering and validation."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from rag_ray.errors import InvalidInput, PermissionDenied
from rag_ray.ingest.rdb_sync import RdbSyncRequest
from rag_ray.sources.rdb.config import DatabaseConfig, check_remote_allowed
from rag_ray.sources.rdb.dialects import (
    compile_sql,
    count_rows,
    max_value,
    quote_identifier,
    select_keys,
    select_rows,
    table_ref,
)
from rag_ray.sources.rdb.introspect import ColumnInfo, select_table_names
from rag_ray.sources.rdb.render import format_value, render_row, row_hash, row_source_uri
from rag_ray.sources.rdb.state import decode_value, encode_value
from rag_ray.sources.rdb.validate import check_value
from rag_ray.types import Acl

ALBUM = table_ref("Album", ["AlbumId", "Title", "UpdatedAt"])
LINES = table_ref("order lines", ["order_id", "line_no", "sku"], schema="sales")
WHEN = dt.datetime(2024, 5, 6, 7, 8, 9)


def one_line(sql: str) -> str:
    return " ".join(sql.split())


# ---- connection config ----
@pytest.mark.parametrize(("kind", "url"), [
    ("postgresql", "postgresql+psycopg://app:***@db:5432/shop"), ("mysql", "mysql+pymysql://app:***@db:3306/shop"),
    ("mariadb", "mariadb+pymysql://app:***@db:3306/shop"), ("oracle", "oracle+oracledb://app:***@db:1521/shop"),
    ("mssql", "mssql+pymssql://app:***@db:1433/shop"), ("postgres", "postgresql+psycopg://app:***@db:5432/shop"),
])
def test_seed_database_config_builds_driver_urls_and_masks_the_password(kind, url):
    config = DatabaseConfig(host="db", database="shop", user="app", password="p@ss/w:rd",  # type: ignore[arg-type]
                            database_type=kind)
    assert config.masked_url() == url
    assert "p@ss/w:rd" not in repr(config) and "p@ss/w:rd" not in str(config.describe())
    assert DatabaseConfig.from_url(config.connect_url()).sqlalchemy_url().password == "p@ss/w:rd"


def test_public_url_and_connectorx_url():
    pg = DatabaseConfig.from_url("postgresql+psycopg://u:secret@h:5433/d")
    assert pg.public_url() == "postgresql://u@h:5433/d"
    assert pg.connectorx_url() == "postgresql://u:secret@h:5433/d"
    assert DatabaseConfig.from_url("mariadb+pymysql://u:p@h/d").connectorx_url() == "mysql://u:p@h/d"
    assert DatabaseConfig.from_url("sqlite:////tmp/x.db").connectorx_url() == "sqlite:///tmp/x.db"
    assert DatabaseConfig.from_url("mssql+pymssql://u:p@h/d").connectorx_url() is None
    assert DatabaseConfig.from_url("oracle+oracledb://u:p@h/d").connectorx_url() is None


def test_bad_configs_name_their_field():
    with pytest.raises(InvalidInput) as err:
        DatabaseConfig(database_type="db2", host="h", database="d")
    assert err.value.field == "database_type"
    with pytest.raises(InvalidInput) as err:
        DatabaseConfig(database_type="postgresql", database="d")
    assert err.value.field == "database_config.host"
    with pytest.raises(InvalidInput):
        DatabaseConfig.from_url("not a url")


def test_allowlist_for_api_connections():
    pg = DatabaseConfig(host="DB.internal", port=5432, database="d", database_type="postgresql")
    check_remote_allowed(pg, ["db.internal"])
    check_remote_allowed(pg, ["other", "db.internal:5432"])
    for allowed in ([], ["db.internal:5433"], ["internal"], ["db.internal.evil"]):
        with pytest.raises(PermissionDenied):
            check_remote_allowed(pg, allowed)
    default_port = DatabaseConfig(host="db", database="d", database_type="mysql")
    check_remote_allowed(default_port, ["db:3306"])
    with pytest.raises(InvalidInput) as err:
        check_remote_allowed(DatabaseConfig.from_url("sqlite:////etc/passwd"), ["*"])
    assert err.value.field == "database_config.database_type"


def test_job_params_never_hold_the_password():
    request = RdbSyncRequest(DatabaseConfig.from_url("postgresql+psycopg://u:topsecret@h/d"))
    assert "topsecret" not in str(request.describe())
    assert request.source == "postgresql://u@h:5432/d"


# ---- compiled SQL ----
def test_keyset_page_postgres_and_mysql():
    stmt = select_rows(ALBUM, ["AlbumId", "Title"], ["AlbumId"], after=(40,), limit=100)
    assert one_line(compile_sql(stmt, "postgresql")) == (
        'SELECT "Album"."AlbumId", "Album"."Title" FROM "Album" WHERE "Album"."AlbumId" > 40 '
        'ORDER BY "Album"."AlbumId" LIMIT 100')
    assert one_line(compile_sql(stmt, "mysql")) == (
        "SELECT `Album`.`AlbumId`, `Album`.`Title` FROM `Album` WHERE `Album`.`AlbumId` > 40 "
        "ORDER BY `Album`.`AlbumId` LIMIT 100")
    assert "LIMIT 100" in compile_sql(stmt, "mariadb") and "LIMIT 100" in compile_sql(stmt, "sqlite")


def test_oracle_pagination_quoting_and_watermark():
    stmt = select_rows(ALBUM, ["AlbumId", "Title"], ["AlbumId"], after=(40,), watermark=("UpdatedAt", WHEN),
                       limit=100)
    assert one_line(compile_sql(stmt, "oracle")) == (
        'SELECT "Album"."AlbumId", "Album"."Title" FROM "Album" WHERE "Album"."AlbumId" > 40 AND '
        '"Album"."UpdatedAt" >= TO_DATE(\'2024-05-06 07:08:09\', \'YYYY-MM-DD HH24:MI:SS\') '
        'ORDER BY "Album"."AlbumId" FETCH FIRST 100 ROWS ONLY')
    bound = compile_sql(stmt, "oracle", literal=False)
    assert ":AlbumId_1" in bound and ":UpdatedAt_1" in bound and "2024" not in bound


def test_sql_server_pagination_quoting_and_watermark():
    stmt = select_rows(ALBUM, ["AlbumId", "Title"], ["AlbumId"], after=(40,), watermark=("UpdatedAt", WHEN),
                       limit=100)
    assert one_line(compile_sql(stmt, "mssql")) == (
        "SELECT TOP 100 [Album].[AlbumId], [Album].[Title] FROM [Album] WHERE [Album].[AlbumId] > 40 AND "
        "[Album].[UpdatedAt] >= '2024-05-06 07:08:09' ORDER BY [Album].[AlbumId]")


def test_composite_key_ranges_expand_without_row_values():
    """SQL Server and Oracle have no ``(a, b) > (x, y)``: the keyset predicate is expanded."""
    stmt = select_rows(LINES, ["order_id", "line_no", "sku"], ["order_id", "line_no"], lower=(7, 2), upper=(9, 1))
    assert one_line(compile_sql(stmt, "mssql")) == (
        "SELECT sales.[order lines].order_id, sales.[order lines].line_no, sales.[order lines].sku "
        "FROM sales.[order lines] WHERE (sales.[order lines].order_id > 7 OR sales.[order lines].order_id = 7 "
        "AND sales.[order lines].line_no >= 2) AND (sales.[order lines].order_id < 9 OR "
        "sales.[order lines].order_id = 9 AND sales.[order lines].line_no <= 1) "
        "ORDER BY sales.[order lines].order_id, sales.[order lines].line_no")
    oracle = one_line(compile_sql(stmt, "oracle"))
    assert 'FROM sales."order lines"' in oracle and '"order lines".line_no >= 2' in oracle


def test_identifiers_are_quoted_not_interpolated():
    evil = table_ref('x"; DROP TABLE users; --', ["id"])
    for kind, quoted in [("postgresql", '"x""; DROP TABLE users; --"'), ("oracle", '"x""; DROP TABLE users; --"'),
                         ("mssql", "[x\"; DROP TABLE users; --]"), ("mysql", '`x"; DROP TABLE users; --`')]:
        assert f"FROM {quoted}" in compile_sql(select_keys(evil, ["id"]), kind)
    assert quote_identifier("mssql", "order") == "[order]" and quote_identifier("postgresql", "Album") == '"Album"'


def test_counts_maxima_and_key_snapshots():
    assert one_line(compile_sql(count_rows(ALBUM, ("UpdatedAt", "2024-01-01")), "mssql")) == (
        "SELECT count(*) AS count_1 FROM [Album] WHERE [Album].[UpdatedAt] >= '2024-01-01'")
    assert one_line(compile_sql(max_value(ALBUM, "UpdatedAt"), "oracle")) == (
        'SELECT max("Album"."UpdatedAt") AS max_1 FROM "Album"')
    assert one_line(compile_sql(select_keys(ALBUM, ["AlbumId"], limit=5), "oracle")) == (
        'SELECT "Album"."AlbumId" FROM "Album" ORDER BY "Album"."AlbumId" FETCH FIRST 5 ROWS ONLY')


# ---- rendering, ids, values ----
def test_values_render_the_same_from_either_reader():
    assert format_value(dt.datetime(2021, 1, 1)) == "2021-01-01 00:00:00" == format_value("2021-01-01 00:00:00")
    assert format_value(decimal.Decimal("0.99")) == format_value(0.99) == "0.99"
    assert format_value(decimal.Decimal("1.00")) == format_value(1.0) == "1"
    assert format_value(b"\x00\x01") == "<2 bytes>" and format_value(True) == "true"


def test_row_text_ids_and_hash():
    row = {"AlbumId": 4, "Title": "Let There Be Rock", "ArtistId": None}
    text = render_row("Album", row, ["AlbumId", "Title", "ArtistId"])
    assert text == "table: Album\nAlbumId: 4\nTitle: Let There Be Rock"
    assert render_row("Album", {"a": None}, ["a"]) == ""
    uri = row_source_uri("src/1", "Order Lines", {"id": 1, "line": "a/b"})
    assert uri == "rdb://src%2F1/Order%20Lines/id=1,line=a%2Fb"
    h = row_hash("t", {"x": 1}, Acl("a"))
    assert h == row_hash("t", {"x": 1}, Acl("a")) and h != row_hash("t", {"x": 1}, Acl("b"))


@pytest.mark.parametrize("value", [WHEN, dt.date(2024, 1, 2), decimal.Decimal("1.50"), 7, 2.5, "2024-01-01", None])
def test_watermark_values_round_trip(value):
    assert decode_value(encode_value(value)) == value


def test_validation_checks_types_lengths_and_nulls():
    int_col = ColumnInfo("n", "INTEGER", "int", nullable=False)
    text_col = ColumnInfo("s", "VARCHAR(3)", "str", max_length=3)
    when_col = ColumnInfo("w", "DATETIME", "datetime")
    assert check_value(int_col, 5) is None and check_value(int_col, 5.0) is None
    assert "expected int" in (check_value(int_col, "five") or "") and "NOT NULL" in (check_value(int_col, None) or "")
    assert "expected int" in (check_value(int_col, True) or "")
    assert check_value(text_col, "abc") is None and "longer than" in (check_value(text_col, "abcd") or "")
    assert check_value(when_col, "2024-01-01 00:00:00") is None and check_value(when_col, WHEN) is None
    assert "not a valid datetime" in (check_value(when_col, "yesterday") or "")


def test_table_selection():
    names = ["Album", "Artist", "Track"]
    assert select_table_names(names, ["album", "Track"]) == ["Album", "Track"]
    assert select_table_names(names, None, ["artist"]) == ["Album", "Track"]
    with pytest.raises(InvalidInput) as err:
        select_table_names(names, ["Nope"])
    assert err.value.field == "include_tables"
