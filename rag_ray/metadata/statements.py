"""Portable single statements over the metadata DB's dialects (SQLite, PostgreSQL, MySQL/MariaDB): insert a row
unless its key exists, and telling a deadlock (retry the transaction) from other failures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Executable, Table, insert
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session


def _if_absent_sqlite(table: Table, values: dict[str, Any]) -> Executable:
    return sqlite.insert(table).values(**values).on_conflict_do_nothing()


def _if_absent_postgresql(table: Table, values: dict[str, Any]) -> Executable:
    return postgresql.insert(table).values(**values).on_conflict_do_nothing()


def _if_absent_mysql(table: Table, values: dict[str, Any]) -> Executable:
    # a no-op update rather than INSERT IGNORE: it takes the existing row's exclusive lock at once (IGNORE takes a
    # shared one, and two transactions upgrading it for their UPDATE deadlock)
    key = next(iter(table.primary_key.columns))
    return mysql.insert(table).values(**values).on_duplicate_key_update({key.name: key})


# dialect name → "INSERT … unless the row exists", one statement
INSERT_IF_ABSENT: dict[str, Callable[[Table, dict[str, Any]], Executable]] = {
    "sqlite": _if_absent_sqlite, "postgresql": _if_absent_postgresql, "mysql": _if_absent_mysql,
    "mariadb": _if_absent_mysql}


def insert_if_absent(session: Session, table: Table, values: dict[str, Any]) -> None:
    """Insert the row unless its key exists (other dialects: a plain insert in a savepoint, a clash ignored)."""
    statement = INSERT_IF_ABSENT.get(session.get_bind().dialect.name)
    if statement is not None:
        session.execute(statement(table, values))
        return
    try:
        with session.begin_nested():
            session.execute(insert(table).values(**values))
    except IntegrityError:
        pass


DEADLOCK_RETRIES = 5
_DEADLOCK_STATES = frozenset({"40P01", "40001"})  # PostgreSQL: deadlock detected, serialization failure
_DEADLOCK_CODES = frozenset({1213, 1205})  # MySQL/MariaDB: deadlock, lock wait timeout


def is_deadlock(exc: OperationalError) -> bool:
    """Whether the database gave up the transaction to break a deadlock (nothing was committed: retry it)."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "args", (None,))[0] if orig is not None else None
    return getattr(orig, "sqlstate", None) in _DEADLOCK_STATES or code in _DEADLOCK_CODES
