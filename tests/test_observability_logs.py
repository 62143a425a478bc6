"""Structured logs, request ids and secret masking, through the in-process HTTP app (real SQLite, Milvus Lite,
the OpenAI SDK against the fake OpenAI server) and ``configure_logging`` writing the real ``logs/app.log``."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rag_ray.access import users
from rag_ray.access.service import AuthService
from rag_ray.api.app import create_app
from rag_ray.config import Settings
from rag_ray.ingest.tracking import JobStore
from rag_ray.llm.fake import FakeLLM
from rag_ray.metadata import MetadataDB
from rag_ray.observability.context import log_context
from rag_ray.observability.logs import MASK, SecretMasker, configure_logging, reset_logging
from rag_ray.store.milvus import ChunkStore
from rag_ray.testing import FakeOpenAIServer
from tests.api_helpers import build_rig, compose, inbox
from tests.rdb_helpers import wait_job

GENERATED_ID = re.compile(r"[0-9a-f]{32}")
LLM_KEY = "sk-test-LLMKEY-0123456789abcdef"
ADMIN_PASSWORD = "Adm1n-Pa55word-for-tests"
USER_PASSWORD = "User-Pa55word-0123456789"
WRONG_PASSWORD = "Wr0ng-Pa55word-0123456789"
SECRET_KEY = "test-secret-key-" + "k" * 40
METRICS_TOKEN = "scrape-token-" + "m" * 30


@pytest.fixture
def log_file(make_settings: Any) -> Iterator[Path]:
    """Logging configured as the entry points do it, into this test's data dir; undone afterwards."""
    settings = make_settings()
    path = configure_logging(settings, file_level=logging.DEBUG)
    assert path is not None
    yield path
    reset_logging()


def lines(path: Path) -> list[dict[str, Any]]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---- request ids ----------------------------------------------------------------------------------------------
def test_request_id_is_echoed_generated_or_replaced(make_settings: Any, fake_store: ChunkStore) -> None:
    rig = build_rig(make_settings(), fake_store)
    assert rig.client.get("/health", headers={"X-Request-ID": "abc-123.ok:1"}).headers["x-request-id"] == \
        "abc-123.ok:1"
    assert GENERATED_ID.fullmatch(rig.client.get("/health").headers["x-request-id"])
    for unsafe in ("x" * 65, "has space", "<script>", "../../etc", "-leading-dash", "ünïcode".encode()):
        echoed = rig.client.get("/health", headers={"X-Request-ID": unsafe}).headers["x-request-id"]
        assert GENERATED_ID.fullmatch(echoed), unsafe


def test_error_bodies_carry_the_request_id(make_settings: Any, fake_store: ChunkStore) -> None:
    rig = build_rig(make_settings(max_request_bytes=2048), fake_store)
    unauthenticated = rig.client.post("/query", json={"query": "x"}, headers={"X-Request-ID": "req-401"})
    invalid = rig.client.post("/query", json={"k": 3}, headers={**rig.auth(), "X-Request-ID": "req-422"})
    too_large = rig.client.post("/query", json={"query": "x" * 5000}, headers={**rig.auth(), "X-Request-ID": "r-413"})
    missing = rig.client.get("/jobs/no-such-job", headers={**rig.auth(), "X-Request-ID": "req-404"})
    for response, request_id, status in ((unauthenticated, "req-401", 401), (invalid, "req-422", 422),
                                         (too_large, "r-413", 413), (missing, "req-404", 404)):
        assert response.status_code == status, response.text
        assert response.headers["x-request-id"] == request_id
        assert response.json()["details"]["request_id"] == request_id


def test_every_line_of_a_request_carries_its_id_and_errors_are_greppable(
        make_settings: Any, fake_store: ChunkStore, log_file: Path) -> None:
    rig = build_rig(make_settings(llm_max_retries=0), fake_store, llm=FakeLLM(fail_with=RuntimeError("model crashed")))
    failed = rig.client.post("/chat", json={"messages": [{"role": "user", "content": "hi"}]},
                             headers={**rig.auth(), "X-Request-ID": "req-provider-down"})
    assert failed.status_code == 503 and failed.json()["details"]["request_id"] == "req-provider-down"
    ok = rig.client.get("/jobs", headers={**rig.auth("alice"), "X-Request-ID": "req-fine"})
    assert ok.status_code == 200

    logged = lines(log_file)
    assert all({"ts", "level", "logger", "message", "request_id", "job_id"} <= set(line) for line in logged)
    failing = [line for line in logged if line["request_id"] == "req-provider-down"]
    assert any(line["level"] == "ERROR" and "provider_server_error" in line["message"] for line in failing)
    access = [line for line in failing if line["logger"] == "rag_ray.access"]
    # the access line of a 503 (overloaded, shutting down, a provider down) is a WARNING: the failure has its ERROR
    assert access[-1]["status"] == 503 and access[-1]["level"] == "WARNING" and access[-1]["route"] == "/chat"
    fine = [line for line in logged if line["request_id"] == "req-fine" and line["logger"] == "rag_ray.access"]
    assert fine[0]["level"] == "INFO" and fine[0]["user"] == "u-alice" and fine[0]["status"] == 200
    assert any('"level": "ERROR"' in line for line in log_file.read_text().splitlines())  # `grep ERROR app.log`


def test_an_unexpected_exception_is_a_500_with_the_id_and_a_logged_traceback(
        make_settings: Any, fake_store: ChunkStore, log_file: Path) -> None:
    rig = build_rig(make_settings(), fake_store)

    def broken() -> None:
        raise ZeroDivisionError("a bug")

    rig.client.app.add_api_route("/broken", broken)  # type: ignore[attr-defined]
    client = TestClient(rig.client.app, raise_server_exceptions=False)
    response = client.get("/broken", headers={"X-Request-ID": "req-bug"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "req-bug"
    body = response.json()
    assert body["error"] == "internal_error" and body["details"]["request_id"] == "req-bug"
    assert "a bug" not in response.text  # the client sees a reference, not the exception
    [logged] = [line for line in lines(log_file) if line["request_id"] == "req-bug" and "exc" in line]
    assert logged["level"] == "ERROR" and body["details"]["error_id"] in logged["message"]
    assert "ZeroDivisionError: a bug" in logged["exc"]


def test_a_job_is_logged_with_the_request_that_created_it(make_settings: Any, fake_store: ChunkStore,
                                                           log_file: Path) -> None:
    rig = build_rig(make_settings(), fake_store)
    (inbox(rig.settings) / "a.txt").write_text("Basalt is a volcanic rock.")
    created = rig.client.post("/extract/filesystem", json={"directory": str(inbox(rig.settings))},
                              headers={**rig.auth(), "X-Request-ID": "req-make-job"})
    assert created.status_code == 202, created.text
    job_id = created.json()["job_id"]
    assert wait_job(rig.db, job_id).status == "succeeded"
    assert JobStore(rig.db).request_id(job_id) == "req-make-job"
    logged = lines(log_file)
    assert any(line["message"].startswith(f"job {job_id} created") and line["request_id"] == "req-make-job"
               for line in logged)
    from_the_job = [line for line in logged if line["job_id"] == job_id]
    assert from_the_job and all(line["request_id"] == "req-make-job" for line in from_the_job)


# ---- provider calls -------------------------------------------------------------------------------------------
def openai_settings(make_settings: Any, server: FakeOpenAIServer, **extra: Any) -> Settings:
    return make_settings(llm_provider="openai", llm_model="fake-model", llm_api_key=LLM_KEY,
                         llm_base_url=server.base_url, llm_max_retries=0, **extra)  # type: ignore[no-any-return]


def test_provider_calls_send_the_request_id(make_settings: Any, fake_store: ChunkStore) -> None:
    with FakeOpenAIServer() as server:
        settings = openai_settings(make_settings, server)
        client = TestClient(create_app(compose(settings, store=fake_store)))
        response = client.post("/chat", json={"messages": [{"role": "user", "content": "hello"}]},
                               headers={"Authorization": "Bearer admin-token", "X-Request-ID": "req-to-openai"})
        assert response.status_code == 200, response.text
        assert server.last("/chat/completions").headers["x-request-id"] == "req-to-openai"


# ---- secrets never logged -------------------------------------------------------------------------------------
def test_requests_carrying_secrets_leave_no_trace_in_the_log(make_settings: Any, fake_store: ChunkStore) -> None:
    with FakeOpenAIServer() as server:
        settings = openai_settings(make_settings, server, secret_key=SECRET_KEY, admin_password=ADMIN_PASSWORD,
                                   metrics_token=METRICS_TOKEN)
        path = configure_logging(settings, file_level=logging.DEBUG)  # the most verbose a server logs
        try:
            secrets = _exercise_with_secrets(settings, fake_store, server)
        finally:
            reset_logging()
    assert path is not None
    text = path.read_text(encoding="utf-8")
    for name, secret in secrets.items():
        assert secret not in text, f"{name} leaked into {path}"
    logged = lines(path)  # it was written: every request is there, at the most verbose level, SDK internals too
    for request_id in ("req-login", "req-login-form", "req-wrong", "req-jwt", "req-api-key", "req-scrape",
                       "req-query-secret", "req-refresh"):
        assert any(line["request_id"] == request_id and line["logger"] == "rag_ray.access" for line in logged)
    assert any(line["level"] == "ERROR" and line["request_id"] == "req-bad-key" for line in logged)
    assert any(line["logger"].startswith("openai") and line["level"] == "DEBUG" for line in logged)


def _exercise_with_secrets(settings: Settings, store: ChunkStore, server: FakeOpenAIServer) -> dict[str, str]:
    db = MetadataDB.from_settings(settings)
    users.create_user(db, "root", ADMIN_PASSWORD, role="admin")
    users.create_user(db, "alice", USER_PASSWORD)
    client = TestClient(create_app(compose(settings, auth=AuthService(db, settings), db=db, store=store)))

    def call(method: str, url: str, request_id: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = {"X-Request-ID": request_id, **({"Authorization": f"Bearer {token}"} if token else {})}
        return client.request(method, url, headers=headers, **kwargs)

    login = call("POST", "/auth/token", "req-login", json={"username": "root", "password": ADMIN_PASSWORD})
    access, refresh = login.json()["access_token"], login.json()["refresh_token"]
    form = call("POST", "/auth/token", "req-login-form",
                data={"grant_type": "password", "username": "alice", "password": USER_PASSWORD})
    assert form.status_code == 200
    assert call("POST", "/auth/token", "req-wrong", json={"username": "alice", "password": WRONG_PASSWORD}
                ).status_code == 401
    api_key = call("POST", "/admin/api-keys", "req-jwt", access, json={"user": "alice", "name": "ci"}).json()["key"]
    assert call("GET", "/jobs", "req-api-key", api_key).status_code == 200
    assert call("GET", "/metrics", "req-scrape", METRICS_TOKEN).status_code == 200
    server.fail(1, 401, message=f"Incorrect API key provided: {LLM_KEY}")  # what OpenAI answers a bad key
    bad_key = call("POST", "/chat", "req-bad-key", api_key, json={"messages": [{"role": "user", "content": "hi"}]})
    assert bad_key.status_code in (502, 503)
    assert call("GET", "/jobs", "req-query-secret", api_key, params={"api_key": api_key, "token": access}
                ).status_code == 200
    call("POST", "/auth/refresh", "req-refresh", json={"refresh_token": refresh})
    db.dispose()
    return {"admin password": ADMIN_PASSWORD, "user password": USER_PASSWORD, "wrong password": WRONG_PASSWORD,
            "SECRET_KEY": SECRET_KEY, "LLM_API_KEY": LLM_KEY, "access token": access, "refresh token": refresh,
            "API key": api_key, "metrics token": METRICS_TOKEN}


def test_masker_covers_messages_arguments_extras_and_tracebacks(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, llm_api_key="configured-key-123456", app_env="test",  # type: ignore[call-arg]
                        database_url="postgresql+psycopg://rag:db-Pa55word-xyz@db.example:5432/rag")
    path = configure_logging(settings)
    log = logging.getLogger("rag_ray.test")
    try:
        log.warning("key %s in args", "configured-key-123456")
        log.warning("db url %s", "postgresql://rag:db-Pa55word-xyz@db.example/rag")
        log.warning("json body {\"password\": \"hunter2-long\", \"api_key\": \"abc-defghijkl\"}")
        log.warning("header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl")
        log.warning("an API key rr_ABCDEFGHIJKLMNOPQRSTUVWX was used", extra={"key": "rr_ABCDEFGHIJKLMNOPQRSTUVWX"})
        with log_context(secrets=["per-request-token-987654"]):
            log.warning("per request per-request-token-987654")
        try:
            raise RuntimeError("failed with token=tok-0123456789 and configured-key-123456")
        except RuntimeError:
            log.exception("with a traceback")
    finally:
        reset_logging()
    assert path is not None
    text = path.read_text(encoding="utf-8")
    for secret in ("configured-key-123456", "db-Pa55word-xyz", "hunter2-long", "abc-defghijkl",
                   "eyJhbGciOiJIUzI1NiJ9", "ABCDEFGHIJKLMNOPQRSTUVWX", "per-request-token-987654", "tok-0123456789"):
        assert secret not in text, secret
    assert text.count(MASK) >= 9 and "RuntimeError" in text  # masked, not dropped
    assert SecretMasker().mask("max_tokens=64 prompt_tokens: 12") == "max_tokens=64 prompt_tokens: 12"


def test_text_format_and_level(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, log_json=False, log_level="WARNING", app_env="test")  # type: ignore[call-arg]
    path = configure_logging(settings)
    log = logging.getLogger("rag_ray.test")
    try:
        with log_context(request_id="req-text"):
            log.info("not at WARNING")
            log.error("an error line")
    finally:
        reset_logging()
    assert path is not None
    [line] = path.read_text().splitlines()
    assert " ERROR [req-text] " in line and line.endswith("rag_ray.test: an error line")


def test_both_sinks_get_masked_lines_and_to_stderr_false_leaves_the_file_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A record is masked once and every handler writes the masked text; ``to_stderr=False`` (a Serve replica whose
    stderr Serve turns into its own log records) writes the log file only — unless there is no file."""
    settings = Settings(data_dir=tmp_path, llm_api_key="configured-key-123456", app_env="test")  # type: ignore[call-arg]
    log = logging.getLogger("rag_ray.test")
    for to_stderr in (True, False):
        path = configure_logging(settings, to_stderr=to_stderr)
        try:
            log.warning("to_stderr=%s key configured-key-123456", to_stderr)
        finally:
            reset_logging()
        assert path is not None
        line = path.read_text(encoding="utf-8").splitlines()[-1]
        assert f"to_stderr={to_stderr} key {MASK}" in line
        err = capsys.readouterr().err
        assert "configured-key-123456" not in err
        assert (f"to_stderr={to_stderr} key {MASK}" in err) is to_stderr
    no_file = settings.model_copy(update={"log_file": False})
    assert configure_logging(no_file, to_stderr=False) is None
    try:
        log.warning("no file, still on stderr")
    finally:
        reset_logging()
    assert "no file, still on stderr" in capsys.readouterr().err


def test_the_log_file_rotates_by_size_and_keeps_every_line(tmp_path: Path) -> None:
    """``RAG_LOG_MAX_BYTES`` / ``RAG_LOG_BACKUP_COUNT``: each file stays under the size, the backups hold the lines
    before, none is lost or split, and a line over the size still goes out whole."""
    settings = Settings(data_dir=tmp_path, log_json=False, log_max_bytes=2_000, log_backup_count=20,  # type: ignore[call-arg]
                        app_env="test")
    path = configure_logging(settings, to_stderr=False)
    log = logging.getLogger("rag_ray.test")
    try:
        for i in range(100):
            log.warning("line %03d %s", i, "x" * 40)
        log.warning("long %s", "y" * 3_000)
    finally:
        reset_logging()
    assert path is not None
    files = sorted(path.parent.glob("app.log*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    assert len(files) > 4
    text = [line for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    assert [int(line.split("line ")[1][:3]) for line in text if " line " in line] == list(range(100))
    assert text[-1].endswith("long " + "y" * 3_000)
    assert all(f.stat().st_size < 2_000 for f in files[:-1])


def test_a_log_file_that_is_a_pipe_gets_every_line_and_is_never_rotated(tmp_path: Path) -> None:
    """``logs/app.log`` may point at a pipe (a container's log collector, ``/dev/stdout``): it has no size to check,
    so lines go straight through, as they did with the standard rotating handler."""
    import os

    read_end, write_end = os.pipe()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").symlink_to(f"/proc/self/fd/{write_end}")
    settings = Settings(data_dir=tmp_path, log_json=False, log_max_bytes=200, app_env="test")  # type: ignore[call-arg]
    configure_logging(settings, to_stderr=False)
    try:
        for i in range(5):
            logging.getLogger("rag_ray.test").warning("piped line %d %s", i, "z" * 60)
    finally:
        reset_logging()
        os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as pipe:
        received = pipe.read().splitlines()
    assert [line.split("piped line ")[1][0] for line in received] == ["0", "1", "2", "3", "4"]
    assert not list((tmp_path / "logs").glob("app.log.*"))
