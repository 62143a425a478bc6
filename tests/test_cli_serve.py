"""The main command, as a user runs it: `rag-cli serve` on the embedded default (local models), then Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from rag_ray.store.lite_server import free_port, port_open
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Chunk

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _wait_healthy(url: str, proc: subprocess.Popen[str], timeout_s: float = 420) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rag-cli serve exited early with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)  # polling a server that is still loading models
    raise AssertionError("server did not become healthy")


def test_serve_answers_with_the_local_llm_and_stops_on_ctrl_c(tmp_path, local_embedder):
    api_port, milvus_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "EMBEDDING_", "MILVUS_", "RAG_"))},
           "RAG_DATA_DIR": str(tmp_path / "data"), "API_PORT": str(api_port), "RAG_MILVUS_LITE_PORT": str(milvus_port),
           "RAG_ADMIN_PASSWORD": "local-admin-pw", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "rag_ray.cli.main", "serve"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{api_port}"
    try:
        _wait_healthy(url, proc)
        assert (tmp_path / "data" / "rag.sqlite").exists() and port_open("127.0.0.1", milvus_port)
        store = ChunkStore.connect(f"http://127.0.0.1:{milvus_port}", "rag_chunks", 384)
        text = "The Eiffel Tower in Paris is 330 metres tall and was completed in 1889."
        store.upsert([Chunk("eiffel-0", "eiffel", "/docs/eiffel.txt", 0, text, "h", {}, Acl("system", (), "public"))],
                     np.asarray(local_embedder.embed([text])))
        token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": "local-admin-pw"},
                           timeout=30).json()["access_token"]
        r = httpx.post(f"{url}/query", headers={"Authorization": f"Bearer {token}"},
                       json={"query": "How tall is the Eiffel Tower?", "mode": "rag", "k": 1, "max_tokens": 40},
                       timeout=300)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["provider"] == "local" and body["model"] == "SmolLM2-135M-Instruct"
        assert body["answer"].strip() and body["usage"]["completion_tokens"] > 0
        assert body["sources"][0]["source"] == "/docs/eiffel.txt"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""
    assert not port_open("127.0.0.1", milvus_port), "Milvus Lite outlived the server"
