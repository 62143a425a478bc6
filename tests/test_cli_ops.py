"""The seed's `rag-cli` commands as written, through the real typer app (``rag_ray.cli.main.app``, settings from the
environment and --env-file like a shell gives them) and, for a few, the installed `rag-cli` command itself: data
ingest / sync / cleanup / status with the progress bar, model set-model, user list filters, the global options,
health. Ingest runs on the ``local`` platform with the fake embedder; the vector store is the session's Milvus Lite."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from rag_ray.api.app import create_app
from rag_ray.cli.main import app
from rag_ray.store.milvus import ChunkStore
from tests.api_helpers import compose

SECRET_KEY = "cli-secret-key-" + "s" * 40
ADMIN_PASSWORD = "Cli-Adm1n-pa55word"
RAG_CLI = Path(sys.executable).with_name("rag-cli")


@pytest.fixture
def env(tmp_path: Path, milvus_uri: str, collection_name: str) -> Iterator[dict[str, str]]:
    """What a shell would export for the CLI: its own data dir and collection, local platform, fake models."""
    values = {"RAG_DATA_DIR": str(tmp_path / "data"), "MILVUS_URI": milvus_uri, "RAG_COLLECTION": collection_name,
              "RAG_PLATFORM": "local", "EMBEDDING_PROVIDER": "fake", "EMBEDDING_MODEL": "hash-bow",
              "LLM_PROVIDER": "fake", "LLM_MODEL": "echo", "APP_ENV": "test", "SECRET_KEY": SECRET_KEY,
              "RAG_ADMIN_PASSWORD": ADMIN_PASSWORD}
    yield values
    ChunkStore.connect(milvus_uri, collection_name, 64).drop()


def cli(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    """`rag-cli ARGS` with ``env`` exported, on a terminal wide enough for a progress bar with a long path."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300", **env}, input=input, catch_exceptions=False)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---- data ingest / status / sync / cleanup ----------------------------------------------------------------------
def test_ingest_shows_progress_then_sync_resyncs_what_was_ingested(env: dict[str, str], tmp_path: Path) -> None:
    docs = tmp_path / ("docs-" + "d" * 80)  # longer than a default 80-column line: the bar must honour COLUMNS
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("Basalt is a fine-grained volcanic rock.")
    (docs / "b.md").write_text("# Granite\nGranite is a coarse-grained igneous rock.")
    (docs / "sub" / "c.txt").write_text("Obsidian is volcanic glass.")

    first = cli(env, "data", "ingest", "--path", str(docs), "--recursive", "--file-types", "txt,md")
    assert first.exit_code == 0, first.output
    assert f"ingest {docs}" in first.stdout and "3/3" in first.stdout  # the progress bar, finished
    assert "succeeded: 3 files ingested" in first.stdout
    status = as_json(cli(env, "data", "status", "--format", "json"))
    assert status["documents"] == 3 and status["chunks"] >= 3

    (docs / "a.txt").write_text("Basalt is a fine-grained volcanic rock, rich in iron.")  # changed
    (docs / "b.md").unlink()  # deleted
    (docs / "sub" / "d.txt").write_text("Pumice floats on water.")  # new
    (docs / "skipped.pdf.tmp").write_text("not a supported type")
    synced = as_json(cli(env, "data", "sync", "--source", "filesystem", "--format", "json"))
    [summary] = synced["synced"]
    assert (summary["status"], summary["files_processed"], summary["files_deleted"], summary["files_skipped"]) == \
        ("succeeded", 2, 1, 1)
    assert synced["missing"] == []
    again = cli(env, "data", "sync", "--source", "filesystem")
    assert again.exit_code == 0 and "0 files ingested" in again.stdout and "3 unchanged" in again.stdout
    assert f"sync {docs}" in again.stdout  # the progress bar
    assert as_json(cli(env, "data", "status", "--format", "json"))["documents"] == 3

    shutil.rmtree(docs / "sub")  # files gone without a sync: cleanup finds them
    dry = as_json(cli(env, "data", "cleanup", "--orphaned", "--dry-run", "--format", "json"))
    assert dry["missing_files"] == 2
    assert as_json(cli(env, "data", "cleanup", "--orphaned", "--format", "json"))["missing_files"] == 2
    assert as_json(cli(env, "data", "status", "--format", "json"))["documents"] == 1
    assert cli(env, "data", "cleanup").exit_code == 2  # say what to clean

    shutil.rmtree(docs)  # a path that is gone is reported, not synced
    gone = cli(env, "data", "sync", "--source", "filesystem")
    assert gone.exit_code == 0 and "no longer exists" in gone.stdout


def test_sync_with_nothing_ingested_and_unknown_sources(env: dict[str, str]) -> None:
    empty = cli(env, "data", "sync", "--source", "filesystem")
    assert empty.exit_code == 0 and "nothing to sync" in empty.stdout
    unknown = cli(env, "data", "sync", "--source", "no-such-source")
    assert unknown.exit_code != 0 and "no-such-source" in unknown.output


# ---- model set-model ---------------------------------------------------------------------------------------------
def test_set_model_with_the_seeds_options(env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "model.env"
    target.write_text("# keep me\nLLM_PROVIDER=local\nOTHER=1\n")
    done = cli(env, "model", "set-model", "--llm-provider", "openai", "--llm-model", "gpt-4", "--env-file", str(target))
    assert done.exit_code == 0, done.output
    assert target.read_text() == "# keep me\nLLM_PROVIDER=openai\nOTHER=1\nLLM_MODEL=gpt-4\n"
    assert cli(env, "model", "set-model", "anthropic:claude-3-5-haiku-latest", "--env-file", str(target)).exit_code == 0
    assert "LLM_PROVIDER=anthropic\n" in target.read_text()
    both = cli(env, "model", "set-model", "--embedding-provider", "openai", "--embedding-model",
               "text-embedding-3-small", "--llm-provider", "ollama", "--llm-model", "llama3.2",
               "--env-file", str(target))
    assert both.exit_code == 0
    assert {"EMBEDDING_PROVIDER=openai", "EMBEDDING_MODEL=text-embedding-3-small", "LLM_PROVIDER=ollama",
            "LLM_MODEL=llama3.2"} <= set(target.read_text().splitlines())

    for bad in (["--llm-provider", "nope", "--llm-model", "x"], ["--llm-provider", "openai"], [],
                ["openai:gpt-4", "--llm-model", "gpt-4"]):
        refused = cli(env, "model", "set-model", *bad, "--env-file", str(target))
        assert refused.exit_code == 1, bad

    custom = tmp_path / "custom.env"  # the global --env-file is the file set-model updates by default
    custom.write_text(f"SECRET_KEY={SECRET_KEY}\n")
    assert cli(env, "--env-file", str(custom), "model", "set-model", "--llm-provider", "openai", "--llm-model",
               "gpt-4").exit_code == 0
    assert "LLM_MODEL=gpt-4" in custom.read_text()


# ---- user list ---------------------------------------------------------------------------------------------------
def test_user_list_filters(env: dict[str, str]) -> None:
    for name, role in (("ann", "admin"), ("ben", "admin"), ("cat", "user"), ("dan", "viewer")):
        assert cli(env, "user", "create", "--username", name, "--password", f"{name}-password-123", "--role",
                   role, "--email", f"{name}@{'long-department-name.' * 3}example.com").exit_code == 0
    assert cli(env, "user", "set-active", "ben", "--inactive").exit_code == 0

    def names(*flags: str) -> list[str]:
        return [u["username"] for u in as_json_list(cli(env, "user", "list", *flags, "--format", "json"))]

    assert names("--role", "admin", "--active") == ["ann"]
    assert names("--role", "admin") == ["ann", "ben"]
    assert names("--inactive") == ["ben"]
    assert names("--active") == ["ann", "cat", "dan"]
    table = cli(env, "user", "list", "--role", "admin")
    assert table.exit_code == 0 and "ann" in table.stdout and "cat" not in table.stdout
    # the table takes the terminal's width when the command runs: a long email stays on one line
    assert f"ann@{'long-department-name.' * 3}example.com" in table.stdout


def as_json_list(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


# ---- global options ----------------------------------------------------------------------------------------------
def test_env_file_debug_and_verbose(env: dict[str, str], tmp_path: Path) -> None:
    data_dir = tmp_path / ("from-env-file-" + "f" * 80)  # a path longer than a line is printed whole
    custom = tmp_path / "custom.env"
    custom.write_text(f"RAG_DATA_DIR={data_dir}\nSECRET_KEY={SECRET_KEY}\nRAG_ADMIN_PASSWORD={ADMIN_PASSWORD}\n"
                      f"LLM_API_KEY=sk-cli-key-0123456789abcdef\n")
    bare = {k: v for k, v in env.items() if k not in ("RAG_DATA_DIR", "SECRET_KEY", "RAG_ADMIN_PASSWORD")}

    init = cli(bare, "--env-file", str(custom), "database", "init")
    assert init.exit_code == 0, init.output
    assert (data_dir / "rag.sqlite").is_file() and str(data_dir) in init.stdout

    quiet = cli(bare, "--env-file", str(custom), "user", "list")
    assert quiet.exit_code == 0 and "admin" in quiet.stdout and quiet.stderr == ""
    verbose = cli(bare, "--verbose", "--env-file", str(custom), "user", "list")
    assert verbose.exit_code == 0 and "admin" in verbose.stdout
    info = [json.loads(line) for line in verbose.stderr.splitlines()]
    assert any(line["level"] == "INFO" and line["message"].startswith("rag-cli user") for line in info)
    assert not any(line["level"] == "DEBUG" for line in info)

    debug = cli(bare, "--debug", "--env-file", str(custom), "database", "status")
    assert debug.exit_code == 0, debug.output
    assert any(json.loads(line)["level"] == "DEBUG" for line in debug.stderr.splitlines())
    log_file = data_dir / "logs" / "app.log"
    assert any(json.loads(line)["level"] == "DEBUG" for line in log_file.read_text().splitlines())
    for secret in (SECRET_KEY, ADMIN_PASSWORD, "sk-cli-key-0123456789abcdef"):
        assert secret not in debug.output and secret not in log_file.read_text()

    missing = cli(bare, "--env-file", str(tmp_path / "nope.env"), "user", "list")
    assert missing.exit_code == 2 and "does not exist" in missing.output


# ---- health ------------------------------------------------------------------------------------------------------
def test_health_checks_each_component_directly(env: dict[str, str], tmp_path: Path) -> None:
    assert cli(env, "database", "init").exit_code == 0
    database = as_json(cli(env, "health", "database", "--format", "json"))
    assert database["database"]["status"] == "ok" and database["database"]["dialect"] == "sqlite"
    assert database["database"]["revision"] == database["database"]["head"]

    milvus = cli(env, "health", "milvus", "--format", "json")
    assert milvus.exit_code == 0  # reachable; the collection does not exist yet: degraded, a warning
    assert as_json(milvus)["milvus"]["status"] == "degraded" and "version" in as_json(milvus)["milvus"]

    everything = as_json(cli(env, "health", "--format", "json"))
    assert set(everything) == {"database", "milvus", "providers"}
    assert everything["providers"]["status"] == "ok"
    assert everything["providers"]["entries"]["fake:echo"] == {"breaker": "closed", "healthy": True}
    table = cli(env, "health")
    assert table.exit_code == 0 and "database" in table.stdout and "providers" in table.stdout

    down = {**env, "DATABASE_URL": "postgresql+psycopg://rag:db-Pa55word-xyz@127.0.0.1:1/rag"}
    failed = cli(down, "health", "database")
    assert failed.exit_code == 1 and "error" in failed.stdout
    assert "db-Pa55word-xyz" not in failed.output and "***" in failed.stdout
    assert cli({**env, "MILVUS_URI": "http://127.0.0.1:1", "RAG_MILVUS_TIMEOUT_S": "2"}, "health", "milvus"
               ).exit_code == 1


def test_health_loads_the_providers_beside_the_other_checks(env: dict[str, str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the providers loads a local model (~10 s on the embedded default). Built on the event loop, it held up
    the database and Milvus checks already running until their timers expired: `rag-cli health` reported a healthy
    database as "no answer within 10s" and exited 1. The build runs on a worker thread, as the probes do."""
    import rag_ray.providers as providers

    built_on: list[threading.Thread] = []

    def build(settings: Any) -> Any:
        built_on.append(threading.current_thread())
        return real_build(settings)

    real_build = providers.build_llm_manager
    monkeypatch.setattr(providers, "build_llm_manager", build)
    assert cli(env, "database", "init").exit_code == 0
    report = as_json(cli(env, "health", "--format", "json"))
    assert report["providers"]["status"] == "ok" and report["database"]["status"] == "ok"
    assert built_on and threading.main_thread() not in built_on  # asyncio.run's loop is the main thread's


@pytest.fixture
def server_url(make_settings: Any, fake_store: ChunkStore) -> Iterator[str]:
    """The app under uvicorn on a socket bound before the server starts (connections wait in its backlog)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(create_app(compose(make_settings(), store=fake_store)), log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def test_health_of_a_running_server(env: dict[str, str], server_url: str) -> None:
    report = as_json(cli(env, "health", "all", "--url", server_url, "--format", "json"))
    assert {name: c["status"] for name, c in report.items()} == {"database": "ok", "milvus": "ok", "providers": "ok"}
    only = as_json(cli(env, "health", "providers", "--url", server_url, "--format", "json"))
    assert set(only) == {"providers"}
    unreachable = cli(env, "health", "--url", "http://127.0.0.1:1")
    assert unreachable.exit_code == 1 and "unreachable" in unreachable.stdout


# ---- the installed command ---------------------------------------------------------------------------------------
def test_the_installed_rag_cli(env: dict[str, str], tmp_path: Path) -> None:
    env_file = tmp_path / "installed.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    base = {"PATH": str(RAG_CLI.parent), "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(RAG_CLI), "--env-file", str(env_file), *args], env=base, capture_output=True,
                              text=True, timeout=300, check=False)

    assert run("user", "create", "--username", "root", "--password", "root-password-123", "--role", "admin"
               ).returncode == 0
    listed = run("user", "list", "--role", "admin", "--active", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [u["username"] for u in json.loads(listed.stdout)] == ["root"]
    health = run("health", "database", "--format", "json")
    assert health.returncode == 0 and json.loads(health.stdout)["database"]["status"] == "ok"


def test_health_before_the_database_exists_creates_nothing(env: dict[str, str], tmp_path: Path) -> None:
    result = cli(env, "health", "database", "--format", "json")
    assert result.exit_code == 1 and "database init" in as_json_error(result)["database"]["error"]
    assert not (tmp_path / "data" / "rag.sqlite").exists()


def as_json_error(result: Result) -> Any:
    return json.loads(result.stdout.strip().splitlines()[-1])
