"""Issue 13: database connections cannot be re-pointed, and RDB mistakes are 4xx rather than 500s.

Each finding of the probe is replayed through HTTP (the in-process app) against a real listener on 127.0.0.1 —
a TCP port, or a unix socket — that the server must NOT connect to. Allow-listed hosts are real addresses, so
without the checks the connection would go out (that is what the probe saw).
"""

from __future__ import annotations

import importlib.util
import pickle
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rag_ray.api.routes.extract import host_resolver
from rag_ray.cli.main import app as cli_app
from rag_ray.config import Settings
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.ingest.tracking import JobStore
from rag_ray.metadata import MetadataDB
from rag_ray.sources.rdb.config import DatabaseConfig
from rag_ray.sources.rdb.state import RdbSource, _fernet
from rag_ray.store.milvus import ChunkStore
from tests.api_helpers import ApiRig, build_rig, inbox
from tests.rdb_helpers import wait_job

ENDPOINTS = ("/extract/rdb", "/extract/rdb/inspect")
PG = "postgresql+psycopg://u:pw@127.0.0.1:5432/d"
MY = "mysql+pymysql://u:pw@127.0.0.1:3306/d"
ALLOWED = ["127.0.0.1:5432", "127.0.0.1:3306"]


@dataclass
class Listener:
    """A listening socket that records every connection it accepts (and closes it, unless ``hold``)."""

    sock: socket.socket
    hold: bool = False
    accepted: list[socket.socket] = field(default_factory=list)
    got_one: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed by the fixture
            self.accepted.append(conn)
            self.got_one.set()
            if not self.hold:
                conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def _listen(sock: socket.socket, hold: bool = False) -> Listener:
    sock.listen(16)
    listener = Listener(sock, hold)
    threading.Thread(target=listener.serve, daemon=True).start()
    return listener


@pytest.fixture
def tcp() -> Iterator[Listener]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    listener = _listen(sock)
    yield listener
    listener.close()


@pytest.fixture
def silent() -> Iterator[Listener]:
    """Accepts and never answers: a database host that does not respond."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    listener = _listen(sock, hold=True)
    yield listener
    listener.close()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rr-", dir="/tmp") as path:  # unix socket paths are short
        yield Path(path)


def _unix(path: Path) -> Listener:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return _listen(sock)


@pytest.fixture
def make_rig(make_settings: Callable[..., Settings], fake_store: Any) -> Callable[..., ApiRig]:
    def build(resolver: Callable[[str, int], list[str]] | None = None, **overrides: Any) -> ApiRig:
        values: dict[str, Any] = {"rdb_allowed_hosts": ALLOWED, "rdb_connect_timeout_s": 2}
        values.update(overrides)
        rig = build_rig(make_settings(**values), fake_store)
        if resolver is not None:  # DNS answers under the test's control
            rig.client.app.dependency_overrides[host_resolver] = lambda: resolver  # type: ignore[attr-defined]
        return rig

    return build


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, milvus_uri: str) -> Iterator[ApiRig]:
    """One app (allow-listing ``ALLOWED``) for the many cases that must be refused before any connection."""
    collection = f"t_{uuid.uuid4().hex[:12]}"
    settings = Settings(data_dir=tmp_path_factory.mktemp("rdb-security") / "data", milvus_uri=milvus_uri,
                        collection=collection, embedding_provider="fake", embedding_model="hash-bow",
                        llm_provider="fake", llm_model="echo", app_env="test", secret_key="test-secret-" + "x" * 40,
                        rdb_allowed_hosts=ALLOWED, rdb_connect_timeout_s=2)
    store = ChunkStore.connect(milvus_uri, collection, FakeEmbedder().dimension)
    yield build_rig(settings, store)
    store.drop()


def _post(rig: ApiRig, endpoint: str, config: dict[str, Any]) -> Any:
    body: dict[str, Any] = {"database_config": config}
    if endpoint == "/extract/rdb":
        body["extraction_config"] = {"mode": "full"}
    return rig.client.post(endpoint, headers=rig.auth("admin"), json=body)


def _refused(response: Any, status: int, field_name: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["field"] == field_name, body
    assert "pw" not in body["message"]
    return body


def _no_jobs(rig: ApiRig) -> None:
    assert JobStore(rig.db).list() == []


# ---- connection-string parameters cannot re-point the connection ----
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("base", "query", "parameter"), [
    (PG, "host=127.0.0.1&port={port}", "host"),
    (PG, "hostaddr=127.0.0.1&port={port}", "hostaddr"),
    (PG, "port={port}", "port"),
    (PG, "sslmode=disable&port={port}", "port"),
    (PG, "service=evil", "service"),
    (PG, "passfile=/etc/passwd", "passfile"),
    (PG, "sslkey=/etc/passwd", "sslkey"),
    (PG, "options=-c%20search_path%3Devil", "options"),
    (MY, "host=127.0.0.1&port={port}", "host"),
    (MY, "port={port}", "port"),
    (MY, "local_infile=1", "local_infile"),
    (MY, "init_command=SELECT%201", "init_command"),
    (MY, "read_default_file=/etc/passwd", "read_default_file"),
    (MY, "charset=utf8mb4&ssl_key=/etc/passwd", "ssl_key"),
])
def test_url_parameters_cannot_re_point_the_connection(rig, tcp, endpoint, base, query, parameter):
    response = _post(rig, endpoint, {"url": f"{base}?{query.format(port=tcp.port)}"})
    body = _refused(response, 422, "database_config.url")
    assert parameter in body["message"] and body["details"]["parameter"] == parameter
    assert tcp.accepted == []
    _no_jobs(rig)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unix_sockets_are_refused(rig, socket_dir, endpoint):
    pg_socket, my_socket = _unix(socket_dir / ".s.PGSQL.5432"), _unix(socket_dir / "mysql.sock")
    try:
        for config, field_name in [({"url": f"{PG}?host={socket_dir}"}, "database_config.url"),
                                   ({"url": f"{MY}?unix_socket={socket_dir}/mysql.sock"}, "database_config.url"),
                                   ({"url": "postgresql+psycopg://u:pw@/d"}, "database_config.url"),
                                   ({"host": str(socket_dir), "database": "d", "user": "u", "password": "pw"},
                                    "database_config.host")]:
            _refused(_post(rig, endpoint, config), 422, field_name)
        assert pg_socket.accepted == [] and my_socket.accepted == []
        _no_jobs(rig)
    finally:
        pg_socket.close()
        my_socket.close()


@pytest.mark.parametrize("host", ["127.0.0.1,127.0.0.1", "127.0.0.1:{port}", "127.0.0.1/24", "db\\instance",
                                  "fe80::1%lo"])
def test_host_fields_hold_one_host(rig, tcp, host):
    config = {"host": host.format(port=tcp.port), "port": 5432, "database": "d", "user": "u", "password": "pw"}
    _refused(_post(rig, "/extract/rdb/inspect", config), 422, "database_config.host")
    assert tcp.accepted == []


# ---- the resolved address is what is checked, and what is connected to ----
def _resolver(answers: dict[str, list[str]], calls: list[str] | None = None) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in answers:
            raise OSError(f"{host} does not resolve")
        return answers[host]

    return resolve


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("answers", [["127.0.0.1"], ["10.9.9.9", "127.0.0.1"], ["::1"]])
def test_a_name_resolving_outside_the_allowlist_is_refused(make_rig, tcp, endpoint, answers):
    rig = make_rig(_resolver({"db.example.test": answers}), rdb_allowed_hosts=[f"10.9.9.9:{tcp.port}"])
    config = {"host": "db.example.test", "port": tcp.port, "database": "d", "user": "u", "password": "pw"}
    body = _refused(_post(rig, endpoint, config), 403, "database_config.host")
    assert "RAG_RDB_ALLOWED_HOSTS" in body["message"]
    assert tcp.accepted == []
    _no_jobs(rig)


def test_the_connection_goes_to_the_checked_address(make_rig, tcp):
    """A DNS answer that changes after the check (rebinding) cannot move the connection: it is pinned."""
    calls: list[str] = []
    answers = iter([["127.0.0.1"]])

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers, ["10.9.9.9"])

    rig = make_rig(rebinding, rdb_allowed_hosts=[f"127.0.0.1:{tcp.port}"])
    config = {"host": "rebind.example.test", "port": tcp.port, "database": "d", "user": "u", "password": "pw"}
    response = _post(rig, "/extract/rdb/inspect", config)
    assert response.status_code == 422 and "cannot inspect the database" in response.json()["message"]
    assert len(tcp.accepted) == 1  # our listener hung up on it: the driver did connect, to 127.0.0.1
    assert calls == ["rebind.example.test"]


def test_an_allow_listed_name_connects_to_its_own_answer(make_rig, tcp):
    rig = make_rig(_resolver({"db.example.test": ["127.0.0.1"]}), rdb_allowed_hosts=[f"db.example.test:{tcp.port}"])
    config = {"host": "db.example.test", "port": tcp.port, "database": "d", "user": "u", "password": "pw"}
    response = _post(rig, "/extract/rdb/inspect", config)
    assert response.status_code == 422 and "cannot inspect the database" in response.json()["message"]
    assert len(tcp.accepted) == 1
    unresolvable = {**config, "host": "gone.example.test"}
    rig = make_rig(_resolver({}), rdb_allowed_hosts=[f"gone.example.test:{tcp.port}"])
    _refused(_post(rig, "/extract/rdb/inspect", unresolvable), 422, "database_config.host")


# ---- malformed fields and missing drivers are 4xx ----
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("config", "field_name"), [
    ({"url": "postgresql+psycopg://u:pw@127.0.0.1:abc/d"}, "database_config.url"),
    ({"url": "postgresql+psycopg://u:pw@127.0.0.1:99999/d"}, "database_config.url"),
    ({"url": f"{PG}?port=abc"}, "database_config.url"),
    ({"url": f"{PG}?connect_timeout=soon"}, "database_config.url"),
    ({"url": f"{PG}?sslmode=maybe"}, "database_config.url"),
    ({"url": f"{PG}?sslmode=require&sslmode=disable"}, "database_config.url"),
    ({"url": f"{MY}?read_timeout=-1"}, "database_config.url"),
    ({"host": "127.0.0.1", "port": "abc", "database": "d"}, "database_config.port"),
    ({"host": "127.0.0.1", "port": 0, "database": "d"}, "database_config.port"),
])
def test_malformed_connection_fields_are_422_naming_the_field(rig, tcp, endpoint, config, field_name):
    _refused(_post(rig, endpoint, config), 422, field_name)
    assert tcp.accepted == []


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("kind", "module", "port"), [("oracle", "oracledb", 1521), ("mssql", "pymssql", 1433)])
def test_a_missing_driver_is_a_4xx_naming_database_type(make_rig, endpoint, kind, module, port):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    rig = make_rig(rdb_allowed_hosts=[f"127.0.0.1:{port}"])
    config = {"database_type": kind, "host": "127.0.0.1", "port": port, "database": "d", "user": "u",
              "password": "pw"}
    body = _refused(_post(rig, endpoint, config), 422, "database_config.database_type")
    assert body["error"] == "driver_unavailable" and f"--extra {kind}" in body["message"]
    _no_jobs(rig)


# ---- an unresponsive host fails fast, with the reason ----
@pytest.mark.timeout(60)
def test_an_unresponsive_database_fails_fast_with_the_reason(make_rig, silent):
    rig = make_rig(rdb_allowed_hosts=[f"127.0.0.1:{silent.port}"], rdb_connect_timeout_s=2)
    config = {"host": "127.0.0.1", "port": silent.port, "database": "d", "user": "u", "password": "pw"}
    started = time.monotonic()
    response = _post(rig, "/extract/rdb/inspect", config)
    assert response.status_code == 422 and "timeout" in response.json()["message"].lower(), response.text
    assert time.monotonic() - started < 15
    assert silent.accepted  # it did reach the host; the host never answered

    r = _post(rig, "/extract/rdb", config)
    assert r.status_code == 202, r.text
    job = wait_job(rig.db, r.json()["job_id"], timeout_s=30)
    assert job.status == "failed" and "timeout" in (job.message or "").lower(), job


# ---- named sources and the CLI follow the same rules ----
def _store_raw_source(db: MetadataDB, secret: str, name: str, url: str) -> None:
    """A source saved before these rules existed (add_source itself now refuses such a URL)."""
    with db.session() as s:
        s.add(RdbSource(name=name, database_type="postgresql", url_masked="postgresql://u:***@h/d",
                        url_encrypted=_fernet(secret).encrypt(url.encode()).decode(), options={}))


def test_a_stored_source_with_host_overrides_is_refused(make_rig, tcp):
    rig = make_rig()
    _store_raw_source(rig.db, rig.settings.jwt_secret(), "legacy", f"{PG}?host=127.0.0.1&port={tcp.port}")
    r = rig.client.post("/extract/rdb", headers=rig.auth("admin"), json={"source": "legacy"})
    body = _refused(r, 422, "source")
    assert "legacy" in body["message"] and "host" in body["message"]
    r = rig.client.get("/extract/rdb/inspect", headers=rig.auth("admin"), params={"source": "legacy"})
    _refused(r, 422, "source")
    assert tcp.accepted == []
    _no_jobs(rig)


def _cli_env(settings: Settings) -> dict[str, str]:
    return {"RAG_DATA_DIR": str(settings.data_dir), "MILVUS_URI": settings.milvus_address,
            "RAG_COLLECTION": settings.collection, "EMBEDDING_PROVIDER": "fake", "EMBEDDING_MODEL": "hash-bow",
            "LLM_PROVIDER": "fake", "LLM_MODEL": "echo", "APP_ENV": "test", "SECRET_KEY": "s" * 40}


def test_cli_urls_cannot_re_point_the_host(make_settings, tcp):
    settings = make_settings()
    url = f"{PG}?host=127.0.0.1&port={tcp.port}"
    runner = CliRunner()
    for args in (["rdb", "inspect", "--url", url], ["rdb", "sources", "add", "evil", "--url", url],
                 ["rdb", "sync", "--local", "--url", url]):
        result = runner.invoke(cli_app, args, env=_cli_env(settings))
        assert result.exit_code == 2, (args, result.output)
        assert "'host' is not allowed" in " ".join(result.output.split()), result.output
    assert tcp.accepted == []
    listed = runner.invoke(cli_app, ["rdb", "sources", "list", "--format", "json"], env=_cli_env(settings))
    assert listed.exit_code == 0 and '"sources": []' in listed.output


# ---- progress callbacks (the other connection the server opens for a caller) ----
@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/cb", "http://localhost:{port}/cb", "http://2130706433:{port}/cb",
    "http://[::ffff:127.0.0.1]:{port}/cb", "http://[2002:7f00:1::1]:{port}/cb", "http://[64:ff9b::7f00:1]:{port}/cb",
    "file:///etc/passwd", "gopher://127.0.0.1:{port}/_", "http://u:p@127.0.0.1:{port}/cb",
])
def test_progress_callbacks_cannot_reach_local_listeners(rig, tcp, url):
    directory = inbox(rig.settings)
    r = rig.client.post("/extract/filesystem", headers=rig.auth("admin"),
                        json={"directory": str(directory), "progress_callback_url": url.format(port=tcp.port)})
    assert r.status_code == 422 and r.json()["field"] == "progress_callback_url", r.text
    assert tcp.accepted == []
    _no_jobs(rig)


# ---- the pinned address survives the trip to Ray workers ----
def test_pinned_config_pickles_and_drives_every_connection():
    config = DatabaseConfig(host="db.example.test", port=5433, database="d", user="u", password="pw",
                            database_type="postgresql")
    pinned = pickle.loads(pickle.dumps(config.pinned("10.1.2.3").with_connect_timeout(3)))
    assert pinned.address == "10.1.2.3" and pinned.connect_args() == {"hostaddr": "10.1.2.3", "connect_timeout": 3}
    assert pinned.engine_url().host == "db.example.test"  # the name stays: TLS verifies it; libpq dials hostaddr
    assert pinned.connectorx_url() == "postgresql://u:pw@10.1.2.3:5433/d"
    assert pinned.public_url() == config.public_url() == "postgresql://u@db.example.test:5433/d"  # ids unchanged
    mysql = DatabaseConfig(host="db.example.test", database="d", database_type="mysql").pinned("10.1.2.3")
    assert mysql.engine_url().host == "10.1.2.3" and mysql.connect_args() == {"connect_timeout": 10}
    strict_tls = DatabaseConfig.from_url("postgresql+psycopg://u:pw@db.example.test/d?sslmode=verify-full")
    assert strict_tls.connectorx_url() is None  # connectorx would drop the TLS requirement: SQLAlchemy reads
