"""The same ChunkStore against a real Milvus server (2.3.5 from the PyPI `milvus` package, no Docker).

Milvus 2.3 has no BM25 function: the store detects that and answers sparse/hybrid with a clear error.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.errors import InvalidInput
from rag_ray.retrieval.filters import retrieval_filter
from rag_ray.store.lite_server import free_port
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Chunk, Principal

pytestmark = pytest.mark.integration
SERVER = Path(sys.executable).with_name("milvus-server")


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory):
    if not SERVER.exists():
        pytest.skip("the `milvus` package (dev dependency) is not installed")
    data = tmp_path_factory.mktemp("milvus-server")
    port = free_port()
    cmd = [str(SERVER), "--data", str(data), "--proxy-port", str(port)]  # the verified minimal invocation
    log = (data / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not _healthy():
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"milvus-server did not start: {(data / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)  # a server process booting: its port is the only signal
    yield f"http://127.0.0.1:{port}"
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(data, ignore_errors=True)


def _healthy() -> bool:
    """Milvus's own readiness endpoint (metrics port 9091); its gRPC port opens long before it serves."""
    try:
        return httpx.get("http://127.0.0.1:9091/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _connect(uri: str) -> ChunkStore:
    deadline = time.monotonic() + 120
    while True:  # the proxy port opens before the coordinators are ready
        try:
            return ChunkStore.connect(uri, "server_chunks", 64)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def test_upsert_search_acl_and_delete_on_a_real_server(milvus_server):
    store = _connect(milvus_server)
    assert store.supports_bm25 is False
    emb = FakeEmbedder()
    texts = ["green tea leaves", "volcanic ash cloud", "black tea brewing"]
    chunks = [Chunk(f"s{i}", f"d{i}", f"/docs/{i}.txt", 0, t, f"h{i}", {"file_type": "txt"},
                    Acl("alice" if i != 1 else "bob", (), "private")) for i, t in enumerate(texts)]
    store.upsert(chunks, emb.embed(texts))
    store.upsert(chunks[:1], emb.embed(texts[:1]))  # idempotent: same id, one row
    store.flush()
    assert store.count() == 3
    query = emb.embed(["tea"], input_type="query")[0]
    alice = store.search(vector=query, k=5, expr=retrieval_filter(Principal("alice")))
    assert {h.chunk_id for h in alice} == {"s0", "s2"}
    hostile = retrieval_filter(Principal("alice"), [{"field": "source", "value": '") or true or ("'}])
    assert store.search(vector=query, k=5, expr=hostile) == []
    with pytest.raises(InvalidInput, match="BM25") as err:
        store.search(text="tea", k=5, strategy="sparse")
    assert err.value.field == "search_strategy"
    store.delete_ids(["s0"])
    assert store.ids_where("") == {"s1", "s2"}
    store.drop()
    np.testing.assert_equal(len(texts), 3)
