"""Scale-out benchmark: the same file ingest on one raylet with 1 CPU vs two raylets with 1 CPU each.

    uv run python bench/scaleout.py [--docs 800] [--rounds 2]

Each round starts a fresh local cluster (`ray start --block`, own process group, own ports — the machine's other
Ray sessions are untouched), runs `python -m jobs.ingest_files` against it with the default settings (the
embedding pool autoscales to the cluster's CPUs; one model thread per reserved CPU) into a fresh collection of
one Milvus Lite, and stops it. The sides alternate (one node, two nodes, one node, ...); the best round of each is
kept. Throughput: chunks written / the job's own duration (actor start-up included, Python start-up not).
The physical limit of that ratio is the model's own: ``model_ratio`` = the texts/s of two processes encoding at once,
each with one model thread on a core of its own, ÷ one such process alone (same texts, the job's batch size,
alternating, best of each) — two vCPUs are not always two cores' worth of the model (shared caches, memory bandwidth,
the hypervisor). ``efficiency_vs_model`` = ``ratio`` ÷ ``model_ratio``.
Last line: one JSON object with ``ratio`` = two-node chunks/s ÷ one-node chunks/s, and the machine's busy cores
while each side's job ran (``/proc/stat``, every process): ``ratio_ceiling`` = the machine's cores ÷ what the
one-node job already kept busy, the most a second node can add here (a 1-CPU raylet's job also needs the driver,
the parse workers, the writer and Milvus beside its model).

``--pin`` (the default) makes "1 CPU" a core: each raylet and everything it starts runs on one core of its own
(``sched_setaffinity``), and this script, the job's driver and Milvus Lite share the head's — so one node is a 1-core
machine, as a 1-vCPU cloud node would be, and the ceiling is 2. ``--no-pin`` lets every process use every core: the
one-node job then also borrows the second core for its driver, parse tasks and Milvus (the ratio's ceiling drops to
the cores ÷ what that job kept busy).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cores import CpuMeter  # noqa: E402  # bench/cores.py: this script's directory is on sys.path

from bench.ingest import chunk_texts, encode_rate, load_model, role, write_corpus  # noqa: E402
from rag_ray.config import Settings  # noqa: E402
from rag_ray.store.lite_server import MilvusLiteServer, free_port  # noqa: E402
from tests.cluster import local_cluster  # noqa: E402


def run_on_cluster(nodes: int, corpus: Path, milvus_uri: str, collection: str, tmp: Path,
                   cores: list[frozenset[int]]) -> dict[str, Any]:
    with local_cluster(tmp, nodes, cores=cores) as cluster:
        job_env = {**cluster.env, "RAY_ADDRESS": cluster.address, "MILVUS_URI": milvus_uri,
                   "RAG_COLLECTION": collection, "RAG_DATA_DIR": str(tmp / collection), "HF_HUB_OFFLINE": "1",
                   "RAG_JOBS_MAX_CONCURRENT": "1", "RAG_JOBS_LOCAL_MAX_FILES": "0"}
        busy_before, started = _busy_seconds(), time.monotonic()
        with CpuMeter(job_role) as meter:
            run = subprocess.run([sys.executable, "-m", "jobs.ingest_files", str(corpus)], env=job_env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=3600)
        busy_cores = (_busy_seconds() - busy_before) / (time.monotonic() - started)
        if run.returncode != 0:
            raise RuntimeError(run.stderr[-3000:])
        summary: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
        return {**summary, "busy_cores": busy_cores, "cores_by_role": meter.cores()}


def job_role(title: str, pid: int) -> str:
    """``bench.ingest.role``, with the job's driver being the ``jobs.ingest_files`` process this script starts."""
    return "driver" if "jobs.ingest_files" in title else role(title, pid)


def node_cores(usable: list[int]) -> list[frozenset[int]]:
    """A core of its own for each of the two raylets, from the ``usable`` ones."""
    if len(usable) < 2:
        raise SystemExit(f"--pin needs two usable cores, this process has {usable}; use --no-pin")
    return [frozenset({usable[0]}), frozenset({usable[1]})]


def encode_on_core(core: int, texts: list[str], batch_size: int, start: Any, spans: Any) -> None:
    """One model thread on ``core``: load, wait for the others, encode ``texts``; report when it ran."""
    os.sched_setaffinity(0, {core})
    model = load_model(1)
    start.wait()
    began = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
    encode_rate(model, texts, batch_size)
    spans.put((began, time.monotonic()))


def model_rate(cores: list[int], texts: list[str], batch_size: int) -> float:
    """Texts/s of one process per core encoding ``texts`` at once: all their texts ÷ first start to last end."""
    ctx = multiprocessing.get_context("spawn")
    start, spans = ctx.Barrier(len(cores)), ctx.Queue()
    procs = [ctx.Process(target=encode_on_core, args=(core, texts, batch_size, start, spans)) for core in cores]
    for proc in procs:
        proc.start()
    ran = [spans.get(timeout=1800) for _ in procs]
    for proc in procs:
        proc.join()
    return len(cores) * len(texts) / (max(end for _, end in ran) - min(began for began, _ in ran))


def model_ratio(cores: list[int], texts: list[str], rounds: int) -> tuple[float, list[float], list[float]]:
    """Two cores' model rate ÷ one core's (alternating, best of each), and each side's rounds."""
    batch_size = Settings().embedding_batch_size  # type: ignore[call-arg]  # the job's own
    one: list[float] = []
    two: list[float] = []
    for _ in range(rounds):
        one.append(model_rate(cores[:1], texts, batch_size))
        two.append(model_rate(cores[:2], texts, batch_size))
    return max(two) / max(one), one, two


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle (every process: the job, Ray, Milvus)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model-texts", type=int, default=600, help="chunks each process encodes for model_ratio")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="one core per raylet; the driver and Milvus on the head's (default)")
    args = parser.parse_args()
    usable = sorted(os.sched_getaffinity(0))  # before this process moves to the head's core
    cores = node_cores(usable) if args.pin else []
    if cores:
        os.sched_setaffinity(0, cores[0])  # inherited by Milvus Lite and the job's driver: they live on the head
    rates: dict[int, list[float]] = {1: [], 2: []}
    busy: dict[int, list[float]] = {1: [], 2: []}
    by_role: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    chunks = 0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / "corpus"
        corpus.mkdir()
        paths = write_corpus(corpus, args.docs)
        texts = chunk_texts(paths, 800, 100)[: args.model_texts]
        model, model_one, model_two = model_ratio(usable[:2], texts, args.rounds)
        with MilvusLiteServer(tmp / "milvus", free_port()) as milvus:
            for round_ in range(args.rounds):
                for nodes in (1, 2):  # alternate: a busy spell slows one round, not one side
                    summary = run_on_cluster(nodes, corpus, milvus.uri, f"scaleout_{round_}_{nodes}", tmp, cores)
                    assert summary["status"] == "succeeded", summary
                    chunks = summary["chunks_written"]
                    rates[nodes].append(chunks / summary["duration_s"])
                    busy[nodes].append(summary["busy_cores"])
                    by_role[nodes].append(summary["cores_by_role"])
    one, two = max(rates[1]), max(rates[2])
    one_busy = busy[1][rates[1].index(one)]  # of the round kept
    machine = psutil.cpu_count() or 1
    print(json.dumps({"docs": args.docs, "chunks": chunks, "one_node_chunks_per_s": round(one, 2),
                      "two_nodes_chunks_per_s": round(two, 2), "ratio": round(two / one, 3),
                      "one_node_rounds": [round(r, 1) for r in rates[1]],
                      "two_node_rounds": [round(r, 1) for r in rates[2]], "cpus_per_node": 1,
                      "one_node_busy_cores": [round(b, 2) for b in busy[1]],
                      "two_node_busy_cores": [round(b, 2) for b in busy[2]],
                      "one_node_cores_by_role": by_role[1][rates[1].index(one)],
                      "two_node_cores_by_role": by_role[2][rates[2].index(two)],
                      "pinned": args.pin, "machine_cores": machine,
                      "ratio_ceiling": round(min(2.0, machine / one_busy), 3),
                      "model_ratio": round(model, 3), "model_one_core_rounds": [round(r, 1) for r in model_one],
                      "model_two_core_rounds": [round(r, 1) for r in model_two],
                      "efficiency_vs_model": round(two / one / model, 3)}))


if __name__ == "__main__":
    main()
