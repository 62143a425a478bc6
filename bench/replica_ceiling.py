"""What the served embedder's layout could reach on this machine, with no serving path at all.

    uv run python bench/replica_ceiling.py [--rounds 2] [--processes 2] [--calls 6,16,24]

``bench/serve.py`` divides Serve's ``/embeddings`` rate by one process encoding on every core at its best batch size
(the raw side). Serve runs the model differently: one one-thread replica per core, each encoding the calls the router
gathers from 32 one-text clients (6–24 texts). This script times that layout alone — ``--processes`` processes of one
torch thread each, started together, encoding the same SciFact queries in calls of each ``--calls`` size — against the
raw side's layout (one process, every core, calls of 64), alternating, best of ``--rounds``. ``ceiling_ratio_c{n}`` =
layout ÷ raw: above 1, the replicas' small calls are not what keeps the served rate under the raw one; the serving
path's CPU and the replicas' per-core rate beside it are. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve import SCIFACT, load_texts  # noqa: E402  # bench/serve.py: the same texts as its /embeddings side

RAW_CALL = 64


def encode_all(threads: int, call: int, texts: list[str], ready: Barrier, done: mp.Queue) -> None:
    """One model process: load, warm up, wait for the others, then encode ``texts`` in calls of ``call``."""
    from rag_ray.embedding.local import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(threads=threads)  # the server's batch size, as on both sides of serve.py
    embedder.embed(texts[:RAW_CALL], input_type="query")
    ready.wait()
    for i in range(0, len(texts), call):
        embedder.embed(texts[i:i + call], input_type="query")
    done.put(time.perf_counter())


def layout_rate(processes: int, threads: int, call: int, texts: list[str]) -> float:
    """Texts/s of ``processes`` model processes, each encoding every text, from their common start to the last end."""
    ready, done = mp.Barrier(processes + 1), mp.Queue()
    workers = [mp.Process(target=encode_all, args=(threads, call, texts, ready, done)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    ready.wait()
    start = time.perf_counter()
    end = max(done.get() for _ in workers)
    for worker in workers:
        worker.join()
    return processes * len(texts) / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2, help="one-thread model processes (replicas)")
    parser.add_argument("--calls", default="6,16,24", help="texts per call the replicas get")
    parser.add_argument("--texts", type=int, default=1000)
    args = parser.parse_args()
    mp.set_start_method("spawn")
    texts = load_texts(SCIFACT / "queries.jsonl", "text", args.texts)
    cores = os.cpu_count() or 1
    sides = {"raw": (1, cores, RAW_CALL)} | {f"c{n}": (args.processes, 1, int(n)) for n in args.calls.split(",") if n}
    rounds: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side, (processes, threads, call) in sides.items():
            rounds[side].append(round(layout_rate(processes, threads, call, texts), 1))
    raw = max(rounds["raw"])
    result: dict[str, object] = {"raw_texts_per_s": raw, "processes": args.processes, "cores": cores}
    for side in sides:
        if side != "raw":
            result[f"layout_texts_per_s_{side}"] = max(rounds[side])
            result[f"ceiling_ratio_{side}"] = round(max(rounds[side]) / raw, 3)
    result["rounds"] = rounds
    print(json.dumps(result))


if __name__ == "__main__":
    main()
