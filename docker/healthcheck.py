"""Container HEALTHCHECK: exit 0 when the API's ``/health`` answers 200 with ``status: ok`` (as ``rag-cli health``).

Standard library only, so the check starts in milliseconds and never loads the project's modules.
``API_PORT`` (default 8000) or ``RAG_HEALTH_URL``; ``RAG_HEALTH_TIMEOUT_S`` (default 4) bounds the request.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request


def main() -> int:
    url = os.environ.get("RAG_HEALTH_URL") or f"http://127.0.0.1:{os.environ.get('API_PORT', '8000')}/health"
    timeout = float(os.environ.get("RAG_HEALTH_TIMEOUT_S", "4"))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = json.load(response).get("status")
    except (OSError, ValueError) as exc:  # refused, timed out, HTTP error status, not JSON
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != "ok":
        print(f"unhealthy: {url}: status {status!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
