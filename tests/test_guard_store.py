"""The guardrails' SQL on every metadata DB (SQLite always; PostgreSQL / MariaDB with ``RAG_TEST_POSTGRES_URL`` /
``RAG_TEST_MYSQL_URL``): admissions from many threads over two engines (two replicas) never pass a limit and are
all-or-nothing, the single-statement lockout update counts and locks the same way everywhere (MariaDB assigns
left to right), and the database refuses to change an audit row."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from rag_ray.access.lockout import ADDRESS, USER, LockoutPolicy, LoginLockout
from rag_ray.audit import AuditLog
from rag_ray.guard.counters import Charge, CounterStore
from rag_ray.metadata import MetadataDB
from tests.access_fixtures import postgres_schema
from tests.guard_helpers import Clock

POSTGRES_ENV, MARIADB_ENV = "RAG_TEST_POSTGRES_URL", "RAG_TEST_MYSQL_URL"


def _server(name: str, env: str) -> object:
    return pytest.param(name, id=name, marks=[pytest.mark.integration,
                                              pytest.mark.skipif(not os.environ.get(env), reason=f"{env} not set")])


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"), _server("postgres", POSTGRES_ENV),
                        _server("mariadb", MARIADB_ENV)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'guard.sqlite'}"
    elif request.param == "postgres":
        with postgres_schema(os.environ[POSTGRES_ENV]) as schema_url:
            yield schema_url
    else:
        base = os.environ[MARIADB_ENV]
        name = f"rag_test_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
        try:
            yield make_url(base).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
            admin.dispose()


@pytest.fixture
def replicas(url: str) -> Iterator[list[MetadataDB]]:
    first = MetadataDB(url)
    second = MetadataDB(url, migrate=False)
    yield [first, second]
    second.dispose()
    first.dispose()


def run_together(count: int, work: object) -> list[object]:
    start = threading.Barrier(count)
    results: list[object] = [None] * count

    def one(i: int) -> None:
        start.wait()
        results[i] = work(i)  # type: ignore[operator]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_admissions_never_pass_a_limit_and_are_all_or_nothing(replicas: list[MetadataDB]) -> None:
    stores = [CounterStore(db) for db in replicas]
    wide = Charge("user:a|tokens|all|day", 0, 86_400, 3, 1000)
    tight = Charge("group:g|tokens|all|day", 0, 86_400, 3, 50)  # 16 of these fit
    results = run_together(40, lambda i: stores[i % 2].admit([wide, tight]))
    admitted = [r for r in results if r is None]
    assert len(admitted) == 16
    assert all(r == tight for r in results if r is not None)  # the tight one refused, the wide one not charged
    used = stores[0].used([wide, tight])
    assert used == {wide.order: 48, tight.order: 48}
    stores[1].adjust([(wide, -48), (tight, -6)])
    assert stores[0].used([wide, tight]) == {wide.order: 0, tight.order: 42}


def test_lockout_counts_locks_and_rolls_its_window_on_every_backend(replicas: list[MetadataDB]) -> None:
    clock = Clock()
    policy = LockoutPolicy(max_failures=3, address_max_failures=5, window_s=100, lockout_s=50)
    guards = [LoginLockout(db, policy, clock) for db in replicas]
    subjects = [(USER, "alice"), (ADDRESS, "10.0.0.7")]
    locked = run_together(3, lambda i: guards[i % 2].fail(subjects))
    assert sorted(map(len, locked)) == [0, 0, 1]  # exactly one failure locked alice (none locked the address)
    refusal = guards[0].refusal(subjects)
    assert refusal is not None and refusal.retry_after == 50
    assert {(lock.kind, lock.subject, lock.failures) for lock in guards[1].locks()} == {(USER, "alice", 3)}
    clock.advance(50)
    assert guards[0].refusal(subjects) is None  # the lockout is over
    clock.advance(50)  # and so is the window: the next failure counts from 1 again
    assert guards[0].fail([(USER, "alice")]) == []
    with replicas[0].engine.connect() as conn:
        failures = conn.execute(sa.text("SELECT failures FROM login_throttle WHERE kind = 'user'")).scalar()
    assert failures == 1
    assert guards[1].clear([(USER, "alice")]) == 0


def test_the_database_refuses_to_change_an_audit_row(replicas: list[MetadataDB]) -> None:
    AuditLog(replicas[0]).record("auth.unlock", target_type="user", target_id="u_1", details={"password": "hunter2"})
    entry = AuditLog(replicas[1]).list(action="auth.unlock")[0]
    assert entry.details == {"password": "[redacted]"}
    for statement in ("UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(sa.exc.DBAPIError), replicas[0].engine.begin() as conn:
            conn.execute(sa.text(statement))
    assert [e.action for e in AuditLog(replicas[0]).list()] == ["auth.unlock"]
