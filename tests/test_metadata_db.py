"""The metadata DB on SQLite, PostgreSQL and MariaDB: migrations up and down, the schema they build matches the
models, the connection pool comes from the settings. PostgreSQL / MariaDB run when ``RAG_TEST_POSTGRES_URL`` /
``RAG_TEST_MYSQL_URL`` are set (``eval "$(bash .ci/services.sh)"``), each test in a fresh schema / database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import make_url

from rag_ray.access import users
from rag_ray.config import Settings
from rag_ray.ingest.tracking import JobStore
from rag_ray.metadata import Base, MetadataDB
from rag_ray.metadata.db import (
    PoolConfig,
    downgrade_schema,
    head_revision,
    make_engine,
    schema_revision,
    upgrade_schema,
)
from tests.access_fixtures import postgres_schema

POSTGRES_ENV, MARIADB_ENV = "RAG_TEST_POSTGRES_URL", "RAG_TEST_MYSQL_URL"


def _server(name: str, env: str) -> Any:
    return pytest.param(name, id=name, marks=[pytest.mark.integration,
                                              pytest.mark.skipif(not os.environ.get(env), reason=f"{env} not set")])


SERVERS = [_server("postgres", POSTGRES_ENV), _server("mariadb", MARIADB_ENV)]


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"), *SERVERS])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from _fresh(request.param, tmp_path)


@pytest.fixture(params=SERVERS)
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from _fresh(request.param, tmp_path)


def _fresh(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta.sqlite'}"
    elif kind == "postgres":
        with postgres_schema(os.environ[POSTGRES_ENV]) as url:
            yield url
    else:
        yield from _mariadb_database(os.environ[MARIADB_ENV])


def _mariadb_database(base_url: str) -> Iterator[str]:
    """A throw-away database (the test user may create ``rag_test*`` databases)."""
    name = f"rag_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def schema_differences(engine: sa.Engine) -> list[Any]:
    """What the migrated schema lacks or has beyond the models (tables, columns, types, nullability, indexes)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return [d for d in compare_metadata(context, Base.metadata) if not _equivalent(d)]


def _equivalent(diff: Any) -> bool:
    """Spellings a dialect reflects differently from the model without any difference in behaviour: MariaDB's
    JSON is LONGTEXT with a JSON check; its BOOLEAN is TINYINT(1)."""
    if isinstance(diff, list):  # a column modification: [(op, schema, table, column, info, old, new)]
        return all(_equivalent(d) for d in diff)
    if diff[0] != "modify_type":
        return False
    reflected, modelled = str(diff[5]).upper(), str(diff[6]).upper()
    return (reflected, modelled) in {("LONGTEXT", "JSON"), ("TINYINT(1)", "BOOLEAN"), ("TINYINT", "BOOLEAN")}


# ---- migrations ------------------------------------------------------------------------------------------------
def test_migrations_up_down_and_up_match_the_models(fresh_url: str) -> None:
    engine = make_engine(fresh_url)
    try:
        assert schema_revision(engine) is None
        upgrade_schema(engine)
        assert schema_revision(engine) == head_revision()
        assert not schema_differences(engine)
        downgrade_schema(engine, "base")
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade_schema(engine)
        upgrade_schema(engine)  # idempotent
        assert schema_revision(engine) == head_revision()
        assert not schema_differences(engine)
    finally:
        engine.dispose()


def test_the_migrated_schema_serves_the_application(fresh_url: str) -> None:
    db = MetadataDB(fresh_url)
    try:
        user = users.create_user(db, "root.admin", "a-long-password-1", email="u@example.com", role="admin")
        users.create_api_key(db, user.user_id, name="ci")
        assert [k.name for k in users.list_api_keys(db, user.user_id)] == ["ci"]
        assert users.create_group(db, "eng", description="엔지니어링 팀").description == "엔지니어링 팀"
        assert users.add_member(db, user.user_id, "eng").member_ids == (user.user_id,)
        jobs = JobStore(db)
        job_id = jobs.create("files", {"path": "/tmp/x", "tags": ["한국어"]}, created_by=user.user_id)
        assert jobs.get(job_id).status == "queued" and jobs.owner(job_id) == user.user_id
    finally:
        db.dispose()


# ---- connection pools ------------------------------------------------------------------------------------------
POOL_SETTINGS = {"db_pool_size": 3, "db_max_overflow": 2, "db_pool_timeout_s": 7.5, "db_pool_recycle_s": 900}


def test_pool_settings_reach_the_engine() -> None:
    settings = Settings(database_url="postgresql+psycopg://rag:pw@127.0.0.1:1/rag", **POOL_SETTINGS)  # type: ignore[arg-type]
    db = MetadataDB.from_settings(settings, migrate=False)  # builds the pool, connects on first use
    try:
        assert db.pool_status() | {"checked_out": 0, "idle": 0, "overflow": 0} == {
            "class": "QueuePool", "size": 3, "max_overflow": 2, "timeout_s": 7.5, "recycle_s": 900,
            "checked_out": 0, "idle": 0, "overflow": 0}
    finally:
        db.dispose()
    assert PoolConfig.from_settings(Settings()) == PoolConfig(5, 10, 30.0, 3600)  # type: ignore[call-arg]


def test_sqlite_keeps_its_own_pooling(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=0.1)  # type: ignore[call-arg]
    db = MetadataDB.from_settings(settings)
    try:
        held = [db.engine.connect() for _ in range(3)]  # more than the server pool settings would allow
        for conn in held:
            conn.close()
        assert set(db.pool_status()) == {"class"}
    finally:
        db.dispose()


@pytest.mark.parametrize("configured", [None, "FULL"])
def test_sqlite_durability_comes_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   configured: str | None) -> None:
    """WAL with ``synchronous=NORMAL`` by default (no fsync per commit); ``RAG_SQLITE_SYNCHRONOUS`` overrides it on
    every pooled connection."""
    if configured:
        monkeypatch.setenv("RAG_SQLITE_SYNCHRONOUS", configured)
    db = MetadataDB.from_settings(Settings(data_dir=tmp_path))  # type: ignore[call-arg]
    try:
        conns = [db.engine.connect() for _ in range(2)]
        for conn in conns:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == {None: 1, "FULL": 2}[configured]
            conn.close()
    finally:
        db.dispose()


def test_an_unknown_sqlite_durability_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("RAG_SQLITE_SYNCHRONOUS", "sometimes")
    with pytest.raises(ValidationError, match="RAG_SQLITE_SYNCHRONOUS"):
        Settings()  # type: ignore[call-arg]


def test_a_server_pool_is_bounded_by_the_settings(server_url: str) -> None:
    settings = Settings(database_url=server_url, db_pool_size=1, db_max_overflow=1,  # type: ignore[call-arg]
                        db_pool_timeout_s=0.2, db_pool_recycle_s=60)
    db = MetadataDB.from_settings(settings)
    try:
        first, second = db.engine.connect(), db.engine.connect()  # the pool, then its one overflow connection
        status = db.pool_status()
        assert status["checked_out"] == 2 and status["size"] == 1 and status["recycle_s"] == 60
        with pytest.raises(sa.exc.TimeoutError):
            db.engine.connect()  # a third waits RAG_DB_POOL_TIMEOUT_S, then fails
        second.close()
        with db.engine.connect() as third:  # a returned connection serves the next caller
            assert third.execute(sa.text("SELECT 1")).scalar() == 1
        first.close()
    finally:
        db.dispose()
