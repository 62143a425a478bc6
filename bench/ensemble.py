"""Ensemble overhead: 3 fake LLMs with known latencies in parallel vs the slowest one alone, and the evaluator's
own cost per candidate. The last line printed is one JSON object.

    uv run python bench/ensemble.py [--latencies 0.2 0.3 0.4] [--repeats 3] [--fake-embedder]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rag_ray.embedding.base import Embedder
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.generation import (
    ContextChunk,
    EnsembleConfig,
    EnsembleGenerator,
    PromptEngineer,
    PromptRequest,
    ResponseEvaluator,
    SingleGenerator,
)
from rag_ray.llm.base import ChatMessage, GenerationParams
from rag_ray.llm.fake import FakeLLM

QUERY = "How does self-attention work in the Transformer architecture, and why did it replace recurrent networks?"
CONTEXT = [
    "The Transformer architecture was introduced in 2017 by Vaswani et al. in the paper Attention Is All You Need.",
    "Self-attention computes weights between all positions of the input sequence using query, key and value vectors.",
    "Transformers replaced recurrent networks in machine translation because attention parallelises well.",
    "Multi-head attention runs several attention functions in parallel and concatenates their outputs.",
    "Positional encodings add order information because attention itself is permutation invariant.",
]
ANSWERS = [
    "The Transformer architecture was introduced in 2017 [1]. Self-attention computes weights between all positions "
    "of the input sequence from query, key and value vectors [2]. It replaced recurrent networks because attention "
    "parallelises well across the sequence [3].\n- Multi-head attention runs several attention functions at once [4].\n"
    "- Positional encodings restore word order [5].",
    "Self-attention lets every token look at every other token: weights come from query-key dot products and mix "
    "the value vectors [2]. Because there is no recurrence, training parallelises well, which is why Transformers "
    "replaced RNNs in translation [3]. Several heads run in parallel [4].",
    "Transformers were invented in 1995 by IBM. Self-attention computes weights between positions [2]. They need "
    "quantum hardware to train. Positional encodings add order information [5].",
]


def responder(text: str) -> Callable[[Sequence[ChatMessage]], str]:
    return lambda messages: text


def load_embedder(force_fake: bool, threads: int) -> tuple[Embedder, str]:
    if not force_fake:
        try:
            from rag_ray.embedding.local import SentenceTransformerEmbedder

            return SentenceTransformerEmbedder(threads=threads), "local:all-minilm-l6-v2"
        except Exception as exc:  # the bench must run anywhere; say which embedder was used
            print(f"local embedder unavailable ({type(exc).__name__}: {exc}); using FakeEmbedder", file=sys.stderr)
    return FakeEmbedder(), "fake:hash-bow"


async def time_it(make: Callable[[], Any], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        await make()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def bench(latencies: Sequence[float], repeats: int, embedder: Embedder) -> dict[str, float]:
    evaluator = ResponseEvaluator(embedder)
    llms = {f"fake{i}:m": FakeLLM("m", provider=f"fake{i}", responder=responder(ANSWERS[i % len(ANSWERS)]),
                                  delay_s=d) for i, d in enumerate(latencies)}
    prompt = PromptEngineer().build(PromptRequest(QUERY, [ContextChunk(f"c{i}", t, 1 - i / 10)
                                                          for i, t in enumerate(CONTEXT)]), "structured")
    params = GenerationParams(max_tokens=512)
    slowest_id = max(llms, key=lambda k: llms[k].delay_s)
    single = SingleGenerator(llms[slowest_id], evaluator)
    ensemble = EnsembleGenerator(llms, evaluator, EnsembleConfig(size=len(llms)))
    await ensemble.generate(QUERY, prompt, params)  # warm-up (model, thread pool)
    slowest = await time_it(lambda: single.generate(QUERY, prompt, params), repeats)
    parallel = await time_it(lambda: ensemble.generate(QUERY, prompt, params), repeats)
    sequential = await time_it(lambda: ensemble.generate(QUERY, prompt, params, parallel=False), 1)
    return {"slowest_single_s": slowest, "ensemble_parallel_s": parallel, "ensemble_sequential_s": sequential}


def evaluator_cost_ms(embedder: Embedder, repeats: int) -> float:
    evaluator = ResponseEvaluator(embedder)
    evaluator.evaluate_many(QUERY, ANSWERS, CONTEXT)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        evaluator.evaluate_many(QUERY, ANSWERS, CONTEXT)
    return (time.perf_counter() - start) * 1000 / (repeats * len(ANSWERS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.2, 0.3, 0.4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fake-embedder", action="store_true", help="skip the local sentence-transformers model")
    parser.add_argument("--embed-threads", type=int, default=1,
                        help="torch threads (0: all cores; on a busy shared box more threads oversubscribe badly)")
    args = parser.parse_args()
    embedder, embedder_name = load_embedder(args.fake_embedder, args.embed_threads)
    timings = asyncio.run(bench(args.latencies, args.repeats, embedder))
    per_candidate = evaluator_cost_ms(embedder, max(3, args.repeats))
    result = {
        "embedder": embedder_name,
        "embed_threads": args.embed_threads,
        "latencies_s": args.latencies,
        "slowest_single_s": round(timings["slowest_single_s"], 4),
        "ensemble3_parallel_s": round(timings["ensemble_parallel_s"], 4),
        "ensemble3_sequential_s": round(timings["ensemble_sequential_s"], 4),
        "ensemble3_over_slowest": round(timings["ensemble_parallel_s"] / timings["slowest_single_s"], 3),
        "ensemble3_over_slowest_latency": round(timings["ensemble_parallel_s"] / max(args.latencies), 3),
        "evaluator_ms_per_candidate": round(per_candidate, 2),
        "target_ratio": 1.2,
    }
    print(f"ensemble of {len(args.latencies)} in parallel: {result['ensemble3_parallel_s']}s, "
          f"slowest alone: {result['slowest_single_s']}s, sequential: {result['ensemble3_sequential_s']}s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
