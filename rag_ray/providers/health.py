"""Component health checks shared by ``GET /health``, ``GET /admin/providers`` and ``rag-cli health``.

A check runs a probe with a time limit and reports ``ok`` / ``degraded`` / ``error``. What went wrong is logged
(with the request id) and kept in ``Health.error`` for the CLI; ``Health.public()`` — what ``/health`` shows without
authentication — carries only the status, the probe's latency and facts the probe marked public.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rag_ray.metadata.db import MetadataDB, schema_revision
from rag_ray.providers.manager import LLMManager

log = logging.getLogger(__name__)
Status = Literal["ok", "degraded", "error"]
CHECK_TIMEOUT_S = 10.0
_RANK: dict[str, int] = {"ok": 0, "degraded": 1, "error": 2}


@dataclass
class Health:
    status: Status
    latency_ms: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)  # public: shown by /health
    details: dict[str, Any] = field(default_factory=dict)  # for admins and the CLI
    error: str | None = None  # what failed (may name hosts or drivers): logged, never in /health

    def public(self) -> dict[str, Any]:
        return {"status": self.status, "latency_ms": round(self.latency_ms, 1), **self.facts}

    def to_dict(self) -> dict[str, Any]:
        out = {**self.public(), **self.details}
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class Probe:
    """A probe's findings: a status other than ok, public facts, admin-only details."""

    status: Status = "ok"
    facts: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


def overall(components: Mapping[str, Health], *, essential: tuple[str, ...] = ("database", "milvus")) -> Status:
    """error when an essential component fails; degraded when anything else is not ok."""
    if any(components[name].status == "error" for name in essential if name in components):
        return "error"
    return "ok" if all(c.status == "ok" for c in components.values()) else "degraded"


async def run_check(name: str, probe: Callable[[], Awaitable[Probe]], timeout_s: float = CHECK_TIMEOUT_S) -> Health:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            found = await probe()
    except TimeoutError:
        found, error = Probe("error"), f"no answer within {timeout_s:g}s"
    except Exception as exc:  # a health check reports, never raises
        found, error = Probe("error"), f"{type(exc).__name__}: {exc}"
    else:
        error = found.reason or ""
    elapsed = (time.perf_counter() - start) * 1000
    if found.status != "ok":
        log.log(logging.ERROR if found.status == "error" else logging.WARNING, "health: %s is %s: %s", name,
                found.status, error)
    return Health(found.status, elapsed, found.facts, found.details, error or None)


def in_thread(fn: Callable[[], Probe]) -> Callable[[], Awaitable[Probe]]:
    async def probe() -> Probe:
        return await asyncio.to_thread(fn)

    return probe


# ---- probes --------------------------------------------------------------------------------------------------
def database_probe(db: MetadataDB) -> Callable[[], Awaitable[Probe]]:
    """Connects, runs ``SELECT 1`` and compares the schema revision with the code's (behind: degraded)."""

    def probe() -> Probe:
        revision, head = schema_revision(db.engine), db.head_revision()
        details = {"dialect": db.engine.dialect.name, "revision": revision, "head": head, "pool": db.pool_status()}
        if revision != head:
            return Probe("degraded", details=details, reason=f"schema at {revision}, code expects {head}")
        return Probe(details=details)

    return in_thread(probe)


def store_probe(count: Callable[[], int]) -> Callable[[], Awaitable[Probe]]:
    """``count()`` of the chunk collection: the vector store answers."""
    return in_thread(lambda: Probe(details={"chunks": count()}))


def providers_probe(manager: LLMManager, *, ping: bool = False,
                    timeout_s: float = CHECK_TIMEOUT_S) -> Callable[[], Awaitable[Probe]]:
    """Circuit breakers (and, with ``ping``, a one-token call to each provider): all down is an error, some down is
    degraded."""

    async def probe() -> Probe:
        if ping:
            await manager.check_health(timeout_s=timeout_s)
        entries = manager.status()["entries"]
        down = [e["id"] for e in entries if e["breaker"]["state"] == "open" or not e["healthy"]]
        facts = {"providers": len(entries), "unavailable": len(down)}
        details = {"strategy": manager.pool.default_strategy,
                   "entries": {e["id"]: {"breaker": e["breaker"]["state"], "healthy": e["healthy"]} for e in entries}}
        if not down:
            return Probe(facts=facts, details=details)
        status: Status = "error" if len(down) == len(entries) else "degraded"
        return Probe(status, facts, details, reason=f"unavailable: {', '.join(down)}")

    return probe


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=lambda s: _RANK[s]) if statuses else "ok"
