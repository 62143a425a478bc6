"""The embedding actor pool is sized from the cluster by default: on a two-node cluster (a head and a second
raylet, 1 CPU each, as in test_multinode) an ingest with no concurrency settings runs more than one embedding
actor, one per raylet; Ray's state API lists the actors of the embedding step. The pool's size follows the job's
input and the cluster's CPUs, not the model, so the fake embedder stands in for it (the local model runs on Ray
Data in test_ingest_ray and test_multinode)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rag_ray.store.milvus import ChunkStore
from tests.cluster import ROOT, local_cluster, state

SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900),  # ~40 s idle; a busy 2-core machine is far slower
              pytest.mark.skipif(not SCIFACT.exists(), reason=f"shared data not found at {SCIFACT}")]


@pytest.fixture
def cluster(tmp_path):
    """A head and a worker raylet, 1 CPU each."""
    with local_cluster(tmp_path, nodes=2) as running:
        yield running


def write_scifact(target: Path, limit: int) -> Path:
    target.mkdir(parents=True)
    with SCIFACT.open() as fh:
        for _, line in zip(range(limit), fh, strict=False):
            doc = json.loads(line)
            (target / f"{doc['_id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}\n", encoding="utf-8")
    return target


def test_embedding_pool_grows_past_one_actor_by_default(cluster, tmp_path, make_settings):
    env, address = cluster.env, cluster.address
    settings = make_settings()
    docs = write_scifact(tmp_path / "scifact", 300)
    job_env = {**env, "RAY_ADDRESS": address, "MILVUS_URI": settings.milvus_address,
               "RAG_COLLECTION": "autoscale", "RAG_DATA_DIR": str(tmp_path / "jobdata"),
               "EMBEDDING_PROVIDER": "fake", "EMBEDDING_MODEL": "hash-bow",  # the pool's size is not the model's
               "RAG_JOBS_MAX_CONCURRENT": "1", "RAG_JOBS_LOCAL_MAX_FILES": "0"}
    for name in ("RAG_EMBED_CONCURRENCY_MIN", "RAG_EMBED_CONCURRENCY_MAX", "RAG_EMBED_ACTOR_CPUS"):
        job_env.pop(name, None)  # the defaults: autoscaling between 1 and what the cluster's CPUs allow
    run = subprocess.run([sys.executable, "-m", "jobs.ingest_files", str(docs)], env=job_env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["files_processed"] == 300
    assert ChunkStore.connect(settings.milvus_address, "autoscale", 64).count() == summary["chunks_written"]

    embedders = [a for a in state("actors", cluster) if "_Embed" in str(a.get("repr_name", ""))]
    assert len(embedders) >= 2, f"the embedding pool never grew: {[a.get('repr_name') for a in embedders]}"
    assert len({a["node_id"] for a in embedders}) == 2  # one actor per raylet: each reserved its node's CPU
