"""A small Prometheus-text metrics registry kept on ``app.state.metrics`` (one per router replica)."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import defaultdict
from typing import Any

Labels = tuple[tuple[str, str], ...]
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _labels(labels: dict[str, str] | None) -> Labels:
    return tuple(sorted((labels or {}).items()))


def _fmt(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in items)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(items, escaped, strict=True)) + "}"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, list[float]]] = defaultdict(dict)
        self._buckets: dict[str, tuple[float, ...]] = {}
        self._help: dict[str, str] = {}

    def inc(self, name: str, labels: dict[str, str] | None = None, value: float = 1.0, help: str = "") -> None:
        key = _labels(labels)
        with self._lock:
            self._help.setdefault(name, help)
            self._counters[name][key] = self._counters[name].get(key, 0.0) + value

    def observe(self, name: str, value: float, labels: dict[str, str] | None = None,
                buckets: tuple[float, ...] = LATENCY_BUCKETS_S, help: str = "") -> None:
        key = _labels(labels)
        with self._lock:
            self._help.setdefault(name, help)
            self._buckets.setdefault(name, buckets)
            bounds = self._buckets[name]
            row = self._histograms[name].setdefault(key, [0.0] * (len(bounds) + 3))  # buckets.., +Inf, sum, count
            row[bisect_left(bounds, value)] += 1
            row[-2] += value
            row[-1] += 1

    def render(self, gauges: dict[str, list[tuple[dict[str, str], float]]] | None = None,
               gauge_help: dict[str, str] | None = None) -> str:
        """Prometheus text exposition: the counters and histograms recorded here, then ``gauges`` read at scrape
        time (``gauge_help``: their HELP lines)."""
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                lines += [f"# HELP {name} {self._help.get(name) or name}", f"# TYPE {name} counter"]
                lines += [f"{name}{_fmt(k)} {v:g}" for k, v in sorted(series.items())]
            for name, hist in sorted(self._histograms.items()):
                lines += [f"# HELP {name} {self._help.get(name) or name}", f"# TYPE {name} histogram"]
                for key, row in sorted(hist.items()):
                    lines += self._histogram_lines(name, key, row)
        for name, values in sorted((gauges or {}).items()):
            lines += [f"# HELP {name} {(gauge_help or {}).get(name) or name}", f"# TYPE {name} gauge"]
            lines += [f"{name}{_fmt(_labels(lbl))} {v:g}" for lbl, v in values]
        return "\n".join(lines) + "\n"

    def _histogram_lines(self, name: str, key: Labels, row: list[float]) -> list[str]:
        out, cumulative = [], 0.0
        for bound, count in zip((*self._buckets[name], float("inf")), row[:-2], strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f"{name}_bucket{_fmt(key, (('le', le),))} {cumulative:g}")
        out += [f"{name}_sum{_fmt(key)} {row[-2]:g}", f"{name}_count{_fmt(key)} {row[-1]:g}"]
        return out


class RequestMetrics:
    """ASGI middleware: request count and latency per route template and status."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            labels = {"route": path, "method": scope.get("method", ""), "status": str(status["code"])}
            self.metrics.inc("rag_http_requests_total", labels, help="HTTP requests by route and status")
            self.metrics.observe("rag_http_request_seconds", time.perf_counter() - start,
                                 {"route": path, "method": scope.get("method", "")},
                                 help="HTTP request latency")
