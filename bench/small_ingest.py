"""Small-ingest benchmark: the README's ingest command on ``../shared/data/documents``, as a user runs it, with the
job in its driver (the default for a job a pipeline could not spread) and on a Ray Data pipeline
(``RAG_JOBS_LOCAL_MAX_FILES=0``), against the raw embedding time of the same chunks.

    uv run python bench/small_ingest.py [--rounds 2]

Each side is the whole command — ``rag-cli data ingest --path DOCS --recursive --file-types …`` in a fresh directory
on the embedded default (Milvus Lite, SQLite, local embedder), process start to exit — so Ray's start-up, model
loads and Milvus Lite count, as they do for the user. Sides alternate, the best round of each is kept. ``raw_s``:
``SentenceTransformer.encode`` of the same chunks in this process, model loaded (the physical limit);
``*_vs_raw``: raw ÷ side seconds. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DOCS = ROOT.parent / "shared" / "data" / "documents"
FILE_TYPES = "pdf,docx,xlsx,md,txt"


def run_cli(pipeline: bool) -> tuple[float, int]:
    """Seconds of the README's ingest command in a fresh directory, and the chunks it reported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "MILVUS_", "EMBEDDING_", "RAY_ADDRESS"))}
    env.update(RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", HF_HUB_OFFLINE="1", COLUMNS="200")
    if pipeline:
        env["RAG_JOBS_LOCAL_MAX_FILES"] = "0"
    with tempfile.TemporaryDirectory(prefix="small-ingest-") as cwd:
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "rag_ray.cli.main", "data", "ingest", "--path", str(DOCS),
                              "--recursive", "--file-types", FILE_TYPES], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=900)
        seconds = time.perf_counter() - start
    reported = re.search(r"succeeded: .*\((\d+) chunks\)", run.stdout)
    if run.returncode != 0 or reported is None:
        raise SystemExit(run.stdout[-2000:] + run.stderr[-2000:])
    return seconds, int(reported.group(1))


def pipeline_chunks() -> list[str]:
    """The job's chunk texts, cut by the pipeline's own parse-and-chunk stage."""
    from rag_ray.config import Settings
    from rag_ray.ingest.stages import ParseAndChunk

    settings = Settings()
    parse = ParseAndChunk(settings.chunk_size, settings.chunk_overlap)
    return [row["text"] for path in sorted(DOCS.iterdir()) if path.suffix.lstrip(".") in FILE_TYPES.split(",")
            for row in parse({"path": str(path), "doc_id": path.name, "source_uri": str(path)}) if row.get("text")]


def encode_seconds(embedder: Any, texts: list[str]) -> float:
    """The time the loaded model itself needs for ``texts``."""
    start = time.perf_counter()
    embedder.embed(texts)
    return time.perf_counter() - start


def rounded(seconds: list[float]) -> list[float]:
    return [round(s, 1) for s in seconds]


def main() -> None:
    from rag_ray.config import Settings
    from rag_ray.embedding.local import SentenceTransformerEmbedder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    texts = pipeline_chunks()
    embedder = SentenceTransformerEmbedder(batch_size=Settings().embedding_batch_size)
    embedder.embed(texts[:16])  # warm: the first call pays one-off set-up
    driver, pipeline, raw = [], [], []
    for _ in range(args.rounds):
        for side, is_pipeline in ((driver, False), (pipeline, True)):
            seconds, written = run_cli(is_pipeline)
            if written != len(texts):
                raise SystemExit(f"the job wrote {written} chunks, the pipeline's stage cuts {len(texts)}")
            side.append(seconds)
        raw.append(encode_seconds(embedder, texts))
    best = {"driver": min(driver), "pipeline": min(pipeline), "raw": min(raw)}
    print(json.dumps({"docs_dir": str(DOCS), "chunks": len(texts), "driver_s": round(best["driver"], 1),
                      "pipeline_s": round(best["pipeline"], 1), "raw_s": round(best["raw"], 1),
                      "driver_vs_raw": round(best["raw"] / best["driver"], 3),
                      "pipeline_vs_raw": round(best["raw"] / best["pipeline"], 3),
                      "driver_speedup": round(best["pipeline"] / best["driver"], 2),
                      "driver_rounds": rounded(driver), "pipeline_rounds": rounded(pipeline),
                      "raw_rounds": rounded(raw)}))


if __name__ == "__main__":
    main()
