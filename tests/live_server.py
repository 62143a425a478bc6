"""The assembled app under uvicorn on 127.0.0.1, for tests that need real connections (client disconnects, held
upstreams, concurrent callers): ``with live_server(services) as url: ...``."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from rag_ray.api.app import create_app

ADMIN = {"Authorization": "Bearer admin-token"}  # tests.api_helpers.TOKENS


@contextmanager
def live_server(services: Any) -> Iterator[str]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(services), log_config=None, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def metric(url: str, name: str, labels: str = "", headers: dict[str, str] = ADMIN) -> float:
    """One sample of ``name`` from ``/metrics`` (summed over series whose labels contain ``labels``), read as an admin
    (``headers``: a real server's admin token)."""
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for series, value in pattern.findall(text) if labels in series)
