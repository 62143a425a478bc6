"""The README as a test: `rag-cli serve` exactly as a user starts it (embedded default, local models, no .env), the
README's ingest command over ``../shared/data/documents``, then every HTTP request the README shows, as written.

Requests are read from README.md itself (each ``curl … localhost:8000/<path> … -d '<json>'``), so an example that
stops working — or a new one — fails here. Ctrl-C then stops everything the server started, Milvus Lite included.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag_ray.store.lite_server import free_port, port_open

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ADMIN_PASSWORD = "readme-admin-pw"


@dataclass(frozen=True)
class Example:
    path: str
    body: dict[str, Any]


def readme_commands() -> list[str]:
    """Every command line of the README's bash blocks, continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    joined = "\n".join(block.replace("\\\n", " ") for block in blocks)
    return [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def readme_examples() -> list[Example]:
    examples = []
    for line in readme_commands():
        match = re.search(r"curl .*localhost:8000(/[\w/.-]+).* -d '(\{.*\})'", line)
        if match and match.group(1) != "/auth/token":
            examples.append(Example(match.group(1), json.loads(match.group(2))))
    return examples


def readme_ingest_args(documents: Path) -> list[str]:
    """The README's `uv run rag-cli data ingest …` with ``--path`` pointed at the shared documents."""
    line = next(c for c in readme_commands() if "rag-cli data ingest" in c)
    args = shlex.split(line)[3:]  # drop `uv run rag-cli`
    args[args.index("--path") + 1] = str(documents)
    return args


def answer_text(path: str, body: dict[str, Any], reply: dict[str, Any]) -> str:
    """What the example answered: generated text, or for search/embeddings a summary that must be non-empty."""
    if path == "/query":
        return reply["answer"] if body.get("mode", "rag") == "rag" else " ".join(s["text"] for s in reply["sources"])
    if path == "/generate/rag":
        return str(reply["response"])
    if path == "/v1/chat/completions":
        return str(reply["choices"][0]["message"]["content"])
    if path == "/embeddings":
        return " ".join(str(len(row["embedding"])) for row in reply["data"])
    raise AssertionError(f"README example on {path} has no check: add one here")


def _wait_healthy(url: str, proc: subprocess.Popen[str], timeout_s: float = 420) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rag-cli serve exited early with {proc.returncode}: {proc.stdout.read()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)  # polling a server that is still loading its models
    raise AssertionError("server did not become healthy")


def test_readme_parser_finds_the_examples():
    paths = [e.path for e in readme_examples()]
    assert paths.count("/query") >= 4 and {"/generate/rag", "/v1/chat/completions", "/embeddings"} <= set(paths)
    assert any(e.body.get("k") == 20 for e in readme_examples())


def test_readme_examples_on_the_embedded_default(tmp_path, shared_data):
    api_port, milvus_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "EMBEDDING_", "MILVUS_", "RAG_"))},
           "RAG_DATA_DIR": str(tmp_path / "data"), "API_PORT": str(api_port), "RAG_MILVUS_LITE_PORT": str(milvus_port),
           "RAG_ADMIN_PASSWORD": ADMIN_PASSWORD, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    cli = [sys.executable, "-m", "rag_ray.cli.main"]
    proc = subprocess.Popen([*cli, "serve"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{api_port}"
    try:
        _wait_healthy(url, proc)
        ingest = subprocess.run([*cli, *readme_ingest_args(shared_data / "documents")], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=900)
        assert ingest.returncode == 0, ingest.stdout + ingest.stderr
        token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD},
                           timeout=30).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        for example in readme_examples():
            r = httpx.post(f"{url}{example.path}", headers=headers, json=example.body, timeout=600)
            assert r.status_code == 200, f"{example}: {r.status_code} {r.text}"
            assert answer_text(example.path, example.body, r.json()).strip(), f"{example}: empty answer {r.text}"
            if example.path == "/query" and example.body.get("mode") == "rag":
                reply = r.json()
                assert (reply["provider"], reply["model"]) == ("local", "SmolLM2-135M-Instruct")
                assert reply["sources"], reply
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""
    assert not port_open("127.0.0.1", milvus_port), "Milvus Lite outlived the server"
