"""Throughput of the local model under concurrency: N requests at once, batched (one generate call for all, the
default) vs sequential (``max_batch`` 1: one after another, what the adapter did before batching).

Every request is a short chat question with exactly ``--tokens`` new tokens (greedy, ``min_tokens`` = ``max_tokens``,
so both sides do the same work). For each N the two sides run on the same loaded model, alternating which goes first,
best of ``--rounds``. Prints ONE JSON line: tokens/s of one request alone, and per N the tokens/s of both sides and
``speedup`` (batched / sequential; > 1 means N concurrent requests take less than N times one).

    uv run python bench/local_llm.py [--concurrency 4,8] [--tokens 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from rag_ray.llm.base import GenerationParams, as_messages
from rag_ray.llm.local import TransformersLLM

QUESTIONS = ("What is the capital of France?", "Name three primary colors.", "Why is the sky blue?",
             "What does a lighthouse keeper do?", "Explain photosynthesis briefly.", "What is a prime number?",
             "How do vaccines work?", "What is the boiling point of water?")


async def tokens_per_s(llm: TransformersLLM, concurrency: int, tokens: int) -> float:
    params = GenerationParams(temperature=0.0, max_tokens=tokens, extra={"min_tokens": tokens})
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(concurrency)]
    start = time.perf_counter()
    answers = await asyncio.gather(*(llm.generate(as_messages(q), params) for q in questions))
    return sum(a.usage.completion_tokens for a in answers) / (time.perf_counter() - start)


def measure(llm: TransformersLLM, concurrency: int, max_batch: int, tokens: int) -> float:
    llm.scheduler.max_batch = max_batch
    return asyncio.run(tokens_per_s(llm, concurrency, tokens))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", default="4,8")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    levels = [int(n) for n in args.concurrency.split(",")]
    llm = TransformersLLM(max_queue=max(levels), max_batch=max(levels))
    measure(llm, 1, 1, 4)  # warm-up
    single = max(measure(llm, 1, 1, args.tokens) for _ in range(args.rounds))
    report: dict[str, object] = {"bench": "local_llm", "model": llm.model, "tokens_per_request": args.tokens,
                                 "rounds": args.rounds, "single_tok_s": round(single, 2)}
    for n in levels:
        best = {"batched": 0.0, "sequential": 0.0}
        for round_no in range(args.rounds):
            order = ("batched", "sequential") if round_no % 2 == 0 else ("sequential", "batched")
            for side in order:
                rate = measure(llm, n, n if side == "batched" else 1, args.tokens)
                best[side] = max(best[side], rate)
        report[f"n{n}"] = {"batched_tok_s": round(best["batched"], 2), "sequential_tok_s": round(best["sequential"], 2),
                           "speedup": round(best["batched"] / best["sequential"], 2)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
