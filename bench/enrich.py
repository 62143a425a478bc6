"""Enrichment cost per chunk, per level, on real chunks.

Chunks are what ingest produces: the shared sample documents parsed by ``rag_ray.sources.files`` (txt, md, pdf,
docx, xlsx; the many-language UDHR file as a corpus of its own) and the first N SciFact abstracts (title + text),
normalised and split by the default chunker (800 characters, 100 overlap). Each level (basic / standard /
comprehensive) is timed chunk by chunk after a warm-up that loads langdetect's profiles and Kiwi's model (reported
separately as ``warmup_s``).

The last line is one JSON object: ``{"levels": {level: {corpus: stats}}, "chunks": ..., "labels": ...}`` with
mean/p50/p95/p99 wall microseconds per chunk, the mean CPU microseconds, both means scaled to an 800-character
chunk, and chunks per second on one core. Keep the measuring functions importable: an ingest-rate comparison builds
on ``load_corpora`` and ``time_level``.

    uv run python bench/enrich.py [--scifact-docs 2000] [--levels basic,standard,comprehensive]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag_ray.enrich import ENRICHMENT_LEVELS, Enricher
from rag_ray.sources.files import parse_file
from rag_ray.text.chunking import Chunker
from rag_ray.text.normalize import normalize_text

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DOCUMENT_TYPES = (".txt", ".md", ".pdf", ".docx", ".xlsx")


def document_texts(root: Path, prefixes: tuple[str, ...]) -> Iterator[str]:
    for path in sorted(root.iterdir()):
        if path.suffix in DOCUMENT_TYPES and path.name.startswith(prefixes):
            yield parse_file(path).text


def scifact_texts(corpus: Path, limit: int) -> Iterator[str]:
    with corpus.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= limit:
                break
            doc = json.loads(line)
            yield normalize_text(f"{doc.get('title', '')}\n\n{doc.get('text', '')}")


def load_corpora(data: Path = SHARED_DATA, scifact_docs: int = 2000, chunker: Chunker | None = None
                 ) -> dict[str, list[str]]:
    """{corpus name: chunk texts}, chunked the way ingest chunks them.

    ``documents`` are the Korean and English sample files; the UDHR file (one article in ~500 languages) is kept
    apart as ``multilingual``: nearly all its chunks take the statistical detector's slow path, which would hide
    the cost on ordinary Korean/English text."""
    chunker = chunker or Chunker()
    docs = data / "documents"
    return {
        "documents": [c for text in document_texts(docs, ("ko_", "en_")) for c in chunker.split(text)],
        "multilingual": [c for text in document_texts(docs, ("multi_",)) for c in chunker.split(text)],
        "scifact": [c for text in scifact_texts(data / "scifact" / "corpus.jsonl", scifact_docs)
                    for c in chunker.split(text)],
    }


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_level(enricher: Enricher, chunks: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Stats for enriching each chunk once, and the labels produced."""
    durations: list[float] = []
    labels: list[dict[str, Any]] = []
    clock = time.perf_counter
    cpu_start = time.process_time()
    for chunk in chunks:
        start = clock()
        labels.append(enricher.enrich(chunk))
        durations.append(clock() - start)
    cpu_total = time.process_time() - cpu_start
    total = sum(durations)
    ordered = sorted(durations)
    mean_chars = sum(map(len, chunks)) / len(chunks)
    stats = {
        "chunks": len(chunks),
        "mean_chars": round(mean_chars, 1),
        "mean_us": round(total / len(chunks) * 1e6, 1),
        "p50_us": round(percentile(ordered, 0.50) * 1e6, 1),
        "p95_us": round(percentile(ordered, 0.95) * 1e6, 1),
        "p99_us": round(percentile(ordered, 0.99) * 1e6, 1),
        "max_us": round(ordered[-1] * 1e6, 1),
        "mean_us_per_800_chars": round(total / len(chunks) * 1e6 * 800 / mean_chars, 1),
        # CPU time is what the enrichment itself costs; wall time also holds waits for a busy shared CPU
        "cpu_mean_us": round(cpu_total / len(chunks) * 1e6, 1),
        "cpu_mean_us_per_800_chars": round(cpu_total / len(chunks) * 1e6 * 800 / mean_chars, 1),
        "chunks_per_s": round(len(chunks) / total, 1),
    }
    return stats, labels


def label_summary(labels: list[dict[str, Any]]) -> dict[str, Any]:
    pii: Counter[str] = Counter()
    for label in labels:
        pii.update(label.get("pii_counts", {}))
    return {"language": dict(Counter(lb["language"] for lb in labels).most_common()),
            "sensitivity": dict(Counter(lb.get("sensitivity", "-") for lb in labels).most_common()),
            "pii": dict(pii.most_common())}


def warm_up() -> float:
    """Load what loads lazily: langdetect's profiles (a non-English Latin text) and Kiwi (Korean, comprehensive)."""
    start = time.perf_counter()
    enricher = Enricher("comprehensive")
    enricher.enrich("Ein kurzer deutscher Satz über die Würde des Menschen.")
    enricher.enrich("서울에서 김철수 과장과 회의했다.")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--scifact-docs", type=int, default=2000)
    parser.add_argument("--levels", default=",".join(ENRICHMENT_LEVELS))
    args = parser.parse_args()

    corpora = load_corpora(args.data, args.scifact_docs)
    warmup_s = warm_up()
    result: dict[str, Any] = {"warmup_s": round(warmup_s, 2), "chunker": {"size": 800, "overlap": 100},
                              "chunks": {name: len(chunks) for name, chunks in corpora.items()},
                              "levels": {}, "labels": {}}
    for level in args.levels.split(","):
        enricher = Enricher(level)  # type: ignore[arg-type]
        result["levels"][level] = {}
        for name, chunks in corpora.items():
            stats, labels = time_level(enricher, chunks)
            result["levels"][level][name] = stats
            print(f"{level:>13} {name:>12}: {stats['mean_us']:8.1f} us/chunk mean (cpu {stats['cpu_mean_us']:8.1f}), "
                  f"p95 {stats['p95_us']:8.1f} us, {stats['chunks_per_s']:9.1f} chunks/s", flush=True)
            if level == "standard" and name != "multilingual":
                result["labels"][name] = label_summary(labels)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
