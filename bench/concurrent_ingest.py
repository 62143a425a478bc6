"""Concurrent small ingests: N one-file uploads sent at once vs the same N one after another.

    uv run python bench/concurrent_ingest.py [--uploads 8] [--path driver|ray-data] [--cpus 2]

The production wiring without HTTP: ``FileJobService`` (admission queue, ``RAG_JOBS_*`` defaults) launching
``run_file_ingest`` as Ray tasks through ``RayPlatform``, a local Ray with ``--cpus`` CPUs, Milvus Lite, SQLite
and the real local model (all-MiniLM-L6-v2). Each upload is a different SciFact document from a different user.
``--path driver``: the default small-job path (stages in the job's driver, the model kept in the worker process);
``--path ray-data``: every job a Ray Data pipeline with its own embedding actor (``RAG_JOBS_LOCAL_MAX_FILES=0``),
the case that used to wedge. One warm-up job first (model and worker start-up, reported separately), then the
sequential round, then the concurrent round. Last line: one JSON object.
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
from typing import Any

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"


def documents(count: int) -> list[tuple[str, bytes]]:
    found = []
    with SCIFACT.open() as fh:
        for line in fh:
            if len(found) >= count:
                break
            doc = json.loads(line)
            found.append((f"{doc['_id']}.txt", f"{doc['title']}\n\n{doc['text']}\n".encode()))
    return found


def run_round(service: Any, docs: list[tuple[str, bytes]], tag: str, *, at_once: bool) -> dict[str, Any]:
    from rag_ray.ingest.file_jobs import upload_request
    from rag_ray.types import Principal

    def submit(i: int, name: str, data: bytes) -> str:
        user = Principal(f"u-{tag}-{i}", f"user{i}", "user")
        path = service.save_upload(user, f"{tag}-{name}", data)
        return str(service.submit(upload_request(path, user, (), "private"), user, confine=False))

    def wait(job_ids: list[str], limit_s: float = 1800) -> None:
        deadline = time.monotonic() + limit_s
        while not all(service.jobs.get(j, with_errors=False).finished_at for j in job_ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tag}: jobs still open after {limit_s:g} s")
            time.sleep(0.1)

    started = time.perf_counter()
    job_ids: list[str] = []
    if at_once:
        job_ids = [submit(i, n, d) for i, (n, d) in enumerate(docs)]
        wait(job_ids)
    else:
        for i, (name, data) in enumerate(docs):
            job_ids.append(submit(i, name, data))
            wait(job_ids[-1:])
    elapsed = time.perf_counter() - started
    jobs = [service.jobs.get(j, with_errors=False) for j in job_ids]
    spans = job_spans(service, job_ids)
    return {"seconds": round(elapsed, 2), "succeeded": sum(j.status == "succeeded" for j in jobs),
            "chunks": sum(j.chunks_done for j in jobs),
            "max_running": max((sum(1 for _, a, b in spans if a <= start < b) for _, start, _ in spans), default=0),
            "mean_wait_s": round(sum((a - c).total_seconds() for c, a, _ in spans) / max(1, len(spans)), 2),
            "mean_run_s": round(sum((b - a).total_seconds() for _, a, b in spans) / max(1, len(spans)), 2),
            "failures": [j.message for j in jobs if j.status != "succeeded"][:3]}


def job_spans(service: Any, job_ids: list[str]) -> list[tuple[Any, Any, Any]]:
    """(created, started, finished) of each job: waiting = queued + launched, running = started to finished."""
    from rag_ray.metadata import JobRecord

    with service.db.session() as s:
        return [(r.created_at, r.started_at, r.finished_at) for r in (s.get(JobRecord, j) for j in job_ids)
                if r is not None and r.started_at and r.finished_at]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--path", choices=["driver", "ray-data"], default="driver")
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    import ray

    from deployments.platform import RayPlatform
    from jobs.ray_executor import init_ray
    from rag_ray.config import Settings
    from rag_ray.ingest.file_jobs import FileJobService
    from rag_ray.metadata import MetadataDB
    from rag_ray.runtime import open_store
    from rag_ray.server.platform import run_file_ingest
    from rag_ray.store.lite_server import MilvusLiteServer, free_port

    docs = documents(2 * args.uploads + 1)
    with tempfile.TemporaryDirectory(prefix="bench-concurrent-") as tmp, \
            MilvusLiteServer(Path(tmp) / "milvus", free_port()) as milvus:
        overrides: dict[str, Any] = {"jobs_local_max_files": 0} if args.path == "ray-data" else {}
        settings = Settings(data_dir=Path(tmp) / "data", milvus_uri=milvus.uri, **overrides)  # type: ignore[call-arg]
        init_ray(settings, num_cpus=args.cpus)
        try:
            db = MetadataDB(settings.metadata_url)
            platform = RayPlatform()
            service = FileJobService(settings, db, open_store(settings, 384), partial(run_file_ingest, platform),
                                     launcher=platform.launch)
            warm = run_round(service, docs[:1], "warm", at_once=False)
            sequential = run_round(service, docs[1:args.uploads + 1], "seq", at_once=False)
            concurrent = run_round(service, docs[args.uploads + 1:], "conc", at_once=True)
        finally:
            ray.shutdown()
    print(json.dumps({"uploads": args.uploads, "path": args.path, "cpus": args.cpus,
                      "max_concurrent": settings.jobs_max_concurrent, "max_per_user": settings.jobs_max_per_user,
                      "warm_up_s": warm["seconds"], "sequential_s": sequential["seconds"],
                      "concurrent_s": concurrent["seconds"],
                      "ratio": round(concurrent["seconds"] / sequential["seconds"], 2),
                      "succeeded": {"sequential": sequential["succeeded"], "concurrent": concurrent["succeeded"]},
                      "max_running": {"sequential": sequential["max_running"], "concurrent": concurrent["max_running"]},
                      "mean_wait_s": {"sequential": sequential["mean_wait_s"], "concurrent": concurrent["mean_wait_s"]},
                      "mean_run_s": {"sequential": sequential["mean_run_s"], "concurrent": concurrent["mean_run_s"]},
                      "failures": sequential["failures"] + concurrent["failures"]}))


if __name__ == "__main__":
    main()
