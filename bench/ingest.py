"""Ingest benchmark: raw embedding rate vs the end-to-end Ray Data pipeline, same chunks, same model.

    uv run python bench/ingest.py [--docs 2500] [--rounds 2] [--batch-sizes 16,32,64] [--sweep-sample 1000]

Writes SciFact documents as text files, chunks them exactly as the pipeline does, times
SentenceTransformer.encode at each batch size on a sample (``--sweep-sample`` chunks) to find the best one.
Then, alternating in each round: encode every chunk at that batch size in this process on all cores (the raw
rate), and the real job (scan → parse → chunk → enrich → autoscaled embedding actors → Milvus upsert, actor
start-up included) into a fresh collection of one Milvus Lite. The best round of each side is kept (a busy
machine slows both alike). ``pipeline_busy_cores``: the cores each part of the job kept busy during its best round
(every process of the machine, by role; the embedding actors' include their start-up); ``raw_busy_cores``: the
in-process model's; ``model_core_efficiency``: chunks/s per busy model core, pipeline ÷ raw. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from cores import OTHER, metered  # bench/cores.py: this script's directory is on sys.path

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"


def role(title: str, pid: int) -> str:
    """Which part of the job a process is, from its title (Ray names workers after the task or actor they run)."""
    if pid == os.getpid():
        return "driver"  # the job's driver, and the raw side's model
    parts = {"MapBatches(_Embed)": "embedding_actors", "MapBatches(_Write)": "milvus_writer",
             "FlatMap(": "parse_enrich_tasks", "MapBatches(Enrich": "parse_enrich_tasks", "milvus-lite": "milvus"}
    return next((name for marker, name in parts.items() if marker in title), OTHER)  # other: Ray's own processes


def write_corpus(target: Path, limit: int) -> list[Path]:
    paths = []
    with SCIFACT.open() as fh:
        for line in fh:
            if len(paths) >= limit:
                break
            doc = json.loads(line)
            path = target / f"{doc['_id']}.txt"
            path.write_text(f"{doc['title']}\n\n{doc['text']}\n", encoding="utf-8")
            paths.append(path)
    return paths


def chunk_texts(paths: list[Path], size: int, overlap: int) -> list[str]:
    from rag_ray.sources.files import parse_file
    from rag_ray.text.chunking import Chunker

    chunker = Chunker(size, overlap)
    return [c for p in paths for c in chunker.split(parse_file(p).text)]


def load_model(threads: int):  # type: ignore[no-untyped-def]
    import torch
    from sentence_transformers import SentenceTransformer

    from rag_ray.embedding.local import resolve_model_path

    torch.set_num_threads(threads)
    model = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu")
    model.encode(["warm up"] * 32, batch_size=16)
    return model


def encode_rate(model, texts: list[str], batch_size: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return len(texts) / (time.perf_counter() - start)


def pipeline_rate(corpus: Path, data_dir: Path, milvus_uri: str, collection: str, batch_size: int
                  ) -> tuple[float, int, float]:
    from jobs.ingest_files import run_file_job
    from rag_ray.config import Settings
    from rag_ray.ingest.file_ingest import FileIngestRequest

    settings = Settings(data_dir=data_dir, milvus_uri=milvus_uri, collection=collection,  # type: ignore[call-arg]
                        embedding_batch_size=batch_size)
    start = time.perf_counter()
    summary = run_file_job(settings, FileIngestRequest(path=corpus))
    elapsed = time.perf_counter() - start
    assert summary.status == "succeeded", summary.errors
    return summary.chunks_written / elapsed, summary.chunks_written, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-sizes", default="16,32,64")
    parser.add_argument("--chunk-size", type=int, default=800)
    parser.add_argument("--chunk-overlap", type=int, default=100)
    parser.add_argument("--sweep-sample", type=int, default=1000, help="chunks for the batch-size sweep (0: all)")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    import ray

    from jobs.ray_executor import init_ray
    from rag_ray.config import Settings
    from rag_ray.store.lite_server import MilvusLiteServer, free_port

    with tempfile.TemporaryDirectory() as tmp:
        init_ray(Settings(data_dir=Path(tmp) / "data"))  # type: ignore[call-arg]  # first: fail fast
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        paths = write_corpus(corpus, args.docs)
        texts = chunk_texts(paths, args.chunk_size, args.chunk_overlap)
        model = load_model(threads)
        sample = texts[: args.sweep_sample] if args.sweep_sample else texts
        sweep = {bs: encode_rate(model, sample, bs) for bs in (int(b) for b in args.batch_sizes.split(","))}
        best_bs = max(sweep, key=lambda b: sweep[b])
        raws, pipes, raw_cores, pipe_cores = [], [], [], []
        with MilvusLiteServer(Path(tmp) / "milvus", free_port()) as milvus:
            for round_ in range(args.rounds):  # alternate the sides: a busy spell slows one round, not one side
                raw_rate, cores = metered(role, lambda: encode_rate(model, texts, best_bs))
                raws.append(raw_rate)
                raw_cores.append(cores.get("driver", 0.0))
                pipe, cores = metered(role, partial(pipeline_rate, corpus, Path(tmp) / f"data{round_}", milvus.uri,
                                                    f"bench_{round_}", best_bs))
                pipes.append(pipe)
                pipe_cores.append(cores)
            ray.shutdown()
    best_pipe, best_raw = pipes.index(max(pipes)), raws.index(max(raws))
    raw, (rate, chunks, elapsed) = raws[best_raw], pipes[best_pipe]
    model_cores = pipe_cores[best_pipe].get("embedding_actors", 0.0)
    result = {"docs": len(paths), "chunks": chunks, "raw_chunks_per_s": round(raw, 2),
              "raw_best_batch_size": best_bs, "sweep_rates_by_batch": {str(k): round(v, 2) for k, v in sweep.items()},
              "pipeline_chunks_per_s": round(rate, 2), "pipeline_seconds": round(elapsed, 1),
              "ratio": round(rate / raw, 3), "rounds": args.rounds,
              "raw_rounds": [round(r, 1) for r in raws], "pipeline_rounds": [round(p[0], 1) for p in pipes],
              "pipeline_busy_cores": pipe_cores[best_pipe], "raw_busy_cores": raw_cores[best_raw],
              "model_core_efficiency": round(rate / model_cores / (raw / raw_cores[best_raw]), 3) if model_cores
              else None,
              "threads": threads}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
