"""Length-aware batches vs the model's own batching, same texts, same model, alternating.

    uv run python bench/embed_batches.py [--threads 1] [--rounds 3] [--sizes 6,24,64] [--corpus-sizes 16,256]

``SentenceTransformerEmbedder.embed`` splits each call into batches of texts of similar length
(``rag_ray.embedding.padding.length_groups``); the other side calls ``SentenceTransformer.encode`` on the call's
texts as they come (sorted inside the call, cut every ``batch_size``, each batch padded to its longest text). Calls of
``--sizes`` SciFact queries (one-text requests gathered by the server: 6–24 at 32 clients) and of ``--corpus-sizes``
SciFact documents (ingest), texts/s, best of the rounds; ``gain_*`` = grouped ÷ plain. Also the cost grid the
embedder's ``CALL_COST_TOKENS_PER_THREAD`` comes from (``--grid``: ms per call of n texts of L words). Last line: one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCIFACT = Path(os.environ.get("RAG_BENCH_SCIFACT", ROOT.parent / "shared" / "data" / "scifact"))


def load(name: str, limit: int) -> list[str]:
    with (SCIFACT / f"{name}.jsonl").open() as fh:
        rows = [json.loads(line) for _, line in zip(range(limit), fh, strict=False)]
    return [f"{row.get('title', '')}\n{row['text']}".strip() for row in rows]


def rate(embed: Callable[[Sequence[str]], object], texts: list[str], call_size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), call_size):
        embed(texts[i:i + call_size])
    return len(texts) / (time.perf_counter() - start)


def cost_grid(st: object) -> dict[str, float]:
    words = ("the quick brown fox jumps over the lazy dog " * 20).split()
    grid = {}
    for n in (1, 4, 16, 32):
        for length in (8, 32, 64):
            texts = [" ".join(words[:length])] * n
            times = []
            for _ in range(15):
                start = time.perf_counter()
                st.encode(texts, batch_size=n, show_progress_bar=False)  # type: ignore[attr-defined]
                times.append(time.perf_counter() - start)
            grid[f"{n}x{length}"] = round(statistics.median(times) * 1000, 2)
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="model threads (a served replica runs 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="6,24,64")
    parser.add_argument("--corpus-sizes", default="16,256")
    parser.add_argument("--grid", action="store_true")
    args = parser.parse_args()

    from rag_ray.embedding.local import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(threads=args.threads)
    st = embedder._st  # the model alone, as before length-aware batches

    def plain(texts: Sequence[str]) -> object:
        return st.encode(list(texts), batch_size=embedder.batch_size, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)

    cases = [("queries", load("queries", 1000), int(s)) for s in args.sizes.split(",") if s] + \
            [("docs", load("corpus", 300), int(s)) for s in args.corpus_sizes.split(",") if s]
    plain(cases[0][1][:32])
    embedder.embed(cases[0][1][:32])
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for kind, texts, size in cases:
            for side, embed in (("plain", plain), ("grouped", embedder.embed)):
                key = f"{kind}{size}_{side}"
                best[key] = max(best.get(key, 0.0), rate(embed, texts, size))
    result: dict[str, object] = {"threads": args.threads, "rounds": args.rounds,
                                 **{k: round(v, 1) for k, v in best.items()}}
    for kind, _, size in cases:
        result[f"gain_{kind}{size}"] = round(best[f"{kind}{size}_grouped"] / best[f"{kind}{size}_plain"], 3)
    if args.grid:
        result["grid_ms"] = cost_grid(st)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
