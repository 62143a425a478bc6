"""The LLM manager's added latency per call and its throughput at concurrency 64.

Against a zero-latency in-process FakeLLM (so the numbers are the manager's own cost: planning, breaker,
retry wrapper, deadline timer, accounting), and optionally through the OpenAI SDK against the fake server.
The last line is one JSON object: overhead_p50_ms, overhead_p99_ms, rps_c64 (+ details).

    uv run python bench/router.py [--calls 5000] [--concurrency 64] [--seconds 3] [--no-http]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

from rag_ray.errors import RagError
from rag_ray.llm.base import Completion, GenerationParams, as_messages
from rag_ray.llm.fake import FakeLLM
from rag_ray.providers import LLMEntry, LLMManager

MESSAGES = as_messages("how does the router behave")
PARAMS = GenerationParams(max_tokens=16)
Call = Callable[[], Awaitable[Completion]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timings(call: Call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def throughput(call: Call, concurrency: int, seconds: float) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            try:
                await call()
            except RagError:  # counted as not done; the benchmark reports throughput of successes
                continue
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


def fake_manager() -> tuple[FakeLLM, LLMManager]:
    llms = [FakeLLM(f"m{i}") for i in range(3)]
    manager = LLMManager([LLMEntry.of(llm, priority=i // 2) for i, llm in enumerate(llms)], strategy="least_loaded")
    return llms[0], manager


async def in_process(calls: int, concurrency: int, seconds: float) -> dict[str, float]:
    direct_llm, manager = fake_manager()
    await timings(lambda: manager.generate(MESSAGES, PARAMS), 200)  # warm up
    direct = await timings(lambda: direct_llm.generate(MESSAGES, PARAMS), calls)
    routed = await timings(lambda: manager.generate(MESSAGES, PARAMS), calls)
    base = statistics.median(direct)
    overhead = [max(0.0, r - base) for r in routed]
    rps_direct = await throughput(lambda: direct_llm.generate(MESSAGES, PARAMS), concurrency, seconds / 2)
    rps = await throughput(lambda: manager.generate(MESSAGES, PARAMS), concurrency, seconds)
    return {"overhead_p50_ms": round(percentile(overhead, 0.5), 4),
            "overhead_p99_ms": round(percentile(overhead, 0.99), 4),
            "direct_p50_ms": round(base, 4), f"rps_c{concurrency}": round(rps, 1),
            f"rps_c{concurrency}_direct": round(rps_direct, 1)}


async def over_http(calls: int, concurrency: int, seconds: float) -> dict[str, float]:
    from rag_ray.llm.openai import OpenAILLM
    from rag_ray.testing import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        llm = OpenAILLM("gpt-4o-mini", api_key="bench", base_url=server.base_url)
        manager = LLMManager([LLMEntry.of(llm)])
        await timings(lambda: llm.generate(MESSAGES, PARAMS), 20)
        direct = await timings(lambda: llm.generate(MESSAGES, PARAMS), calls)
        routed = await timings(lambda: manager.generate(MESSAGES, PARAMS), calls)
        rps = await throughput(lambda: manager.generate(MESSAGES, PARAMS), concurrency, seconds)
    return {"http_direct_p50_ms": round(statistics.median(direct), 3),
            "http_routed_p50_ms": round(statistics.median(routed), 3),
            f"http_rps_c{concurrency}": round(rps, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--http-calls", type=int, default=150)
    parser.add_argument("--no-http", action="store_true", help="skip the OpenAI-SDK-over-fake-server run")
    args = parser.parse_args()
    result = asyncio.run(in_process(args.calls, args.concurrency, args.seconds))
    if not args.no_http:
        result |= asyncio.run(over_http(args.http_calls, args.concurrency, args.seconds))
    result |= {"calls": args.calls, "concurrency": args.concurrency}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
