"""Engine/session factory for the metadata DB and the schema upgrade (alembic, run programmatically).

The connection pool of a server database (PostgreSQL, MySQL/MariaDB) comes from the settings
(``RAG_DB_POOL_SIZE``, ``RAG_DB_MAX_OVERFLOW``, ``RAG_DB_POOL_TIMEOUT_S``, ``RAG_DB_POOL_RECYCLE_S``); SQLite keeps
SQLAlchemy's own pooling for it and runs in WAL mode with ``RAG_SQLITE_SYNCHRONOUS`` (default ``NORMAL``). Build the DB
of a process with ``MetadataDB.from_settings``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from rag_ray.config import SqliteSynchronous
from rag_ray.errors import StoreError

if TYPE_CHECKING:
    from rag_ray.config import Settings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_SYNCHRONOUS_LEVELS: dict[SqliteSynchronous, int] = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}


@dataclass(frozen=True)
class PoolConfig:
    """A server database's connection pool: ``size`` kept open, ``max_overflow`` more under load, ``timeout_s`` to
    wait for a free one (then the request fails), connections older than ``recycle_s`` replaced (-1: never)."""

    size: int = 5
    max_overflow: int = 10
    timeout_s: float = 30.0
    recycle_s: int = 3600

    @classmethod
    def from_settings(cls, settings: Settings) -> PoolConfig:
        return cls(size=settings.db_pool_size, max_overflow=settings.db_max_overflow,
                   timeout_s=settings.db_pool_timeout_s, recycle_s=settings.db_pool_recycle_s)


def make_engine(url: str, pool: PoolConfig | None = None, *,
                sqlite_synchronous: SqliteSynchronous = "NORMAL") -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", partial(_sqlite_pragmas, synchronous=sqlite_synchronous))
        return engine
    pool = pool or PoolConfig()
    return create_engine(url, pool_pre_ping=True, pool_size=pool.size, max_overflow=pool.max_overflow,
                         pool_timeout=pool.timeout_s, pool_recycle=pool.recycle_s)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, *, synchronous: SqliteSynchronous) -> None:
    # WAL lets the Serve router read job progress while an ingest driver writes it.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS_LEVELS[synchronous]}")  # a number from a closed table
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with alembic (idempotent)."""
    _migrate(engine, "upgrade", revision)


def downgrade_schema(engine: Engine, revision: str = "base") -> None:
    """Take the schema back to ``revision`` (``base``: no tables)."""
    _migrate(engine, "downgrade", revision)


# alembic keeps its migration context in module globals: two threads migrating at once break each other
# (KeyError 'script'/'config'), e.g. job drivers that freed slots start together in one server process
_migrate_lock = threading.Lock()


def _migrate(engine: Engine, direction: str, revision: str) -> None:
    from alembic import command

    cfg = _alembic_config()
    try:
        with _migrate_lock, engine.begin() as connection:
            cfg.attributes["connection"] = connection
            getattr(command, direction)(cfg, revision)
    except Exception as exc:
        raise StoreError(f"metadata DB migration failed: {exc}") from exc


def head_revision() -> str | None:
    """The newest migration this code ships."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated). Raises when the database cannot be reached."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        if not engine.dialect.has_table(conn, "alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


class MetadataDB:
    """Owns the engine and hands out sessions. Build one per process: ``MetadataDB.from_settings(settings)``."""

    def __init__(self, url: str, *, migrate: bool = True, pool: PoolConfig | None = None,
                 sqlite_synchronous: SqliteSynchronous = "NORMAL"):
        self.url = url
        self.engine = make_engine(url, pool, sqlite_synchronous=sqlite_synchronous)
        if migrate:
            upgrade_schema(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate: bool = True) -> MetadataDB:
        return cls(settings.metadata_url, migrate=migrate, pool=PoolConfig.from_settings(settings),
                   sqlite_synchronous=settings.sqlite_synchronous)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @staticmethod
    def head_revision() -> str | None:
        return head_revision()

    def pool_status(self) -> dict[str, Any]:
        """The pool's configuration and use (server databases); SQLite: its pool class only."""
        pool: Any = self.engine.pool
        if not hasattr(pool, "checkedout") or self.engine.dialect.name == "sqlite":
            return {"class": type(pool).__name__}
        return {"class": type(pool).__name__, "size": pool.size(), "max_overflow": pool._max_overflow,
                "timeout_s": pool.timeout(), "recycle_s": pool._recycle, "checked_out": pool.checkedout(),
                "idle": pool.checkedin(), "overflow": max(0, pool.overflow())}

    def dispose(self) -> None:
        self.engine.dispose()
