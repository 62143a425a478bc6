"""Deadline benchmark: does a burst of requests that time out leave work behind?

    uv run python bench/deadline.py [--rounds 3] [--burst 5] [--burst-timeout 2] [--burst-tokens 256]

The embedded default (local embedder, local SmolLM2 LLM, Milvus Lite, no Ray) is built by the composition root and
served by uvicorn on 127.0.0.1. Each round alternates the two sides: the idle latency of a short RAG request
(``/query`` mode rag, ``max_tokens`` 40), then a burst of ``--burst`` long requests that time out (deadline
``--burst-timeout`` s through ``X-Request-Timeout``; the client itself gives up one second later, so a server without
deadlines sees its clients disconnect), and the same short request right after the burst. ``ratio`` = best after-burst
latency ÷ best idle latency (goal ≤ 1.2). A second burst then times how soon ``rag_llm_active_generations`` reads 0
(``seconds_until_idle_after_burst``). A short request the server failed (e.g. 503 after the provider manager's
60 s) counts with the time it took, and every request's status is listed. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHORT = {"query": "What does Ray Serve do?", "mode": "rag", "max_tokens": 40, "temperature": 0.0}
LONG = {"query": "Write a long, detailed essay on the history of distributed computing.", "mode": "rag",
        "temperature": 0.0}
TOKEN = "bench-token"


def start_server(data_dir: Path) -> tuple[str, Any, Any]:
    """(base URL, uvicorn server, Milvus Lite server) for the embedded default."""
    import asyncio

    import uvicorn

    from rag_ray.api.app import create_app
    from rag_ray.config import Settings
    from rag_ray.server.backends import LocalBackends
    from rag_ray.server.compose import build_services
    from rag_ray.store.lite_server import MilvusLiteServer, free_port
    from rag_ray.testing.auth import StaticAuthenticator
    from rag_ray.types import Principal

    lite = MilvusLiteServer(data_dir / "milvus", free_port()).start()
    settings = Settings(data_dir=data_dir, milvus_uri=lite.uri, collection="bench_deadline", app_env="test",
                        secret_key="bench-secret-" + "z" * 40, mask_pii=False)
    auth = StaticAuthenticator({TOKEN: Principal("u-bench", "bench", "admin")})
    services = asyncio.run(build_services(settings, LocalBackends(settings), auth=auth))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(services), log_level="warning", timeout_graceful_shutdown=2))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    import httpx

    while True:  # until uvicorn accepts
        try:
            httpx.get(f"{url}/health", timeout=5)
            return url, server, lite
        except httpx.TransportError:
            time.sleep(0.1)


def short_request(url: str) -> tuple[float, int]:
    """(seconds, status) of one short RAG request; a failure (the server gave up on it) is timed too."""
    import httpx

    start = time.perf_counter()
    response = httpx.post(f"{url}/query", json=SHORT, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=900)
    return time.perf_counter() - start, response.status_code


def active_generations(url: str) -> float | None:
    """``rag_llm_active_generations`` right after the burst (None: a server without the gauge)."""
    import httpx

    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("rag_llm_active_generations{")]
    return sum(values) if values else None


def seconds_until_idle(url: str, limit_s: float = 120.0) -> float | None:
    """Seconds from now until ``rag_llm_active_generations`` reads 0 (None: no gauge, or not within ``limit_s``)."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        active = active_generations(url)
        if active is None:
            return None
        if active == 0:
            return round(time.perf_counter() - start, 3)
        time.sleep(0.05)
    return None


def burst(url: str, size: int, timeout_s: float, tokens: int) -> list[str]:
    """``size`` long requests at once; each ends at its deadline (504) or when its client gives up."""
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}", "X-Request-Timeout": f"{timeout_s:g}"}

    def one(_: int) -> str:
        try:
            return str(httpx.post(f"{url}/query", json={**LONG, "max_tokens": tokens}, headers=headers,
                                  timeout=timeout_s + 1).status_code)
        except httpx.TimeoutException:
            return "client_gave_up"

    with ThreadPoolExecutor(size) as pool:
        return list(pool.map(one, range(size)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst", type=int, default=5)
    parser.add_argument("--burst-timeout", type=float, default=2.0)
    parser.add_argument("--burst-tokens", type=int, default=256)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-deadline-"))
    url, server, lite = start_server(data_dir)
    try:
        short_request(url)  # warm-up: model loads, first-call costs
        idle: list[tuple[float, int]] = []
        after: list[tuple[float, int]] = []
        outcomes = []
        left_running: list[float | None] = []
        settled: list[float | None] = []
        for _ in range(args.rounds):
            idle.append(short_request(url))
            outcomes.append(burst(url, args.burst, args.burst_timeout, args.burst_tokens))
            left_running.append(active_generations(url))
            after.append(short_request(url))
            burst(url, args.burst, args.burst_timeout, args.burst_tokens)  # again, to time how soon the model idles
            settled.append(seconds_until_idle(url))
            print(f"idle {idle[-1]}  after burst {after[-1]}  burst {outcomes[-1]}  left running {left_running[-1]}"
                  f"  idle again after {settled[-1]}", file=sys.stderr)
    finally:
        server.should_exit = True
        lite.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    best_idle, best_after = min(t for t, _ in idle), min(t for t, _ in after)
    print(json.dumps({"bench": "deadline", "idle_s": round(best_idle, 3), "after_burst_s": round(best_after, 3),
                      "ratio": round(best_after / best_idle, 2), "rounds": args.rounds, "burst": args.burst,
                      "burst_timeout_s": args.burst_timeout, "burst_tokens": args.burst_tokens,
                      "idle_all": [(round(t, 2), code) for t, code in idle],
                      "after_all": [(round(t, 2), code) for t, code in after], "burst_outcomes": outcomes,
                      "active_generations_after_burst": left_running,
                      "seconds_until_idle_after_burst": settled}))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # generation threads a server without deadlines left running would otherwise hold the exit
