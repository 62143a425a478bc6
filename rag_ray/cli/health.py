"""`rag-cli health [database|milvus|providers|all]`: check the components directly, or a running server (--url).

Directly: the metadata DB (connects, ``SELECT 1``, schema revision against the code's, pool use), Milvus (connects,
server version, the collection and its row count; an embedded Milvus Lite that is not running is reported, never
started) and the LLM providers (a one-token call to each). With ``--url``: the server's ``GET /health``.
Exit code 0 when nothing checked is in error (degraded is a warning), 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rag_ray.cli.context import console_from, settings_from
from rag_ray.config import Settings
from rag_ray.providers.health import (
    CHECK_TIMEOUT_S,
    Health,
    Probe,
    database_probe,
    in_thread,
    providers_probe,
    run_check,
)

COLOURS = {"ok": "green", "degraded": "yellow", "error": "red"}


class Target(StrEnum):
    database = "database"
    milvus = "milvus"
    providers = "providers"
    all = "all"


def health(ctx: typer.Context,
           target: Target = typer.Argument(Target.all, help="what to check"),
           url: str | None = typer.Option(None, "--url", help="ask this running server's /health instead, "
                                                              "e.g. http://127.0.0.1:8000"),
           format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Check the metadata DB, Milvus and the LLM providers (or a running server with --url)."""
    names = [t.value for t in Target if t is not Target.all] if target is Target.all else [target.value]
    console = console_from(ctx)
    report = _server_report(console, url, names) if url else asyncio.run(_direct_report(settings_from(ctx), names))
    if format == "json":
        typer.echo(json.dumps(report, default=str))
    else:
        _print(console, report)
    if any(c["status"] == "error" for c in report.values()):
        raise typer.Exit(1)


async def _direct_report(settings: Settings, names: list[str]) -> dict[str, dict[str, Any]]:
    checks = {"database": lambda: _database(settings), "milvus": lambda: _milvus(settings),
              "providers": lambda: _providers(settings)}
    found = await asyncio.gather(*(checks[name]() for name in names))
    return {name: result.to_dict() for name, result in zip(names, found, strict=True)}


async def _database(settings: Settings) -> Health:
    from sqlalchemy.engine import make_url

    from rag_ray.metadata import MetadataDB

    try:
        url = make_url(settings.metadata_url)
        if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_file():
            return Health("error", error=f"no metadata DB at {url.database} (`rag-cli database init` creates it)")
        db = MetadataDB.from_settings(settings, migrate=False)
    except Exception as exc:  # an unusable URL or DB_TYPE
        return Health("error", error=f"{type(exc).__name__}: {exc}")
    try:
        result = await run_check("database", database_probe(db))
    finally:
        db.dispose()
    result.details["url"] = _masked_url(settings.metadata_url)
    return result


def _masked_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


async def _milvus(settings: Settings) -> Health:
    timeout = min(settings.milvus_timeout_s, CHECK_TIMEOUT_S)

    def probe() -> Probe:
        from pymilvus import MilvusClient

        from rag_ray.store.milvus import GRPC_OPTIONS

        client = MilvusClient(uri=settings.milvus_address, token=settings.milvus_token_value, timeout=timeout,
                              grpc_options=GRPC_OPTIONS)
        try:
            details: dict[str, Any] = {"uri": settings.milvus_address, "version": client.get_server_version(),
                                       "collection": settings.collection}
            if not client.has_collection(settings.collection):
                return Probe("degraded", details=details, reason="the collection does not exist yet (nothing "
                                                                 "ingested)")
            details["chunks"] = int(client.get_collection_stats(settings.collection).get("row_count", 0))
            return Probe(details=details)
        finally:
            client.close()

    result = await run_check("milvus", in_thread(probe), timeout_s=timeout + 5)
    if result.status == "error" and settings.uses_milvus_lite:
        result.error = f"{result.error} (the embedded Milvus Lite runs while `rag-cli serve` does)"
    return result


async def _providers(settings: Settings) -> Health:
    from rag_ray.providers import build_llm_manager

    try:  # off the loop: a local model loads here (~10 s), and the other checks' timers run meanwhile
        manager = await asyncio.to_thread(build_llm_manager, settings)
    except Exception as exc:  # a provider that cannot be configured (missing key, unknown provider)
        return Health("error", error=f"{type(exc).__name__}: {exc}")
    return await run_check("providers", providers_probe(manager, ping=True), timeout_s=CHECK_TIMEOUT_S + 5)


def _server_report(console: Console, url: str, names: list[str]) -> dict[str, dict[str, Any]]:
    import httpx

    base = url.rstrip("/")
    try:
        response = httpx.get(f"{base}/health", timeout=CHECK_TIMEOUT_S + 5)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"server": {"status": "error", "error": f"{base} unreachable: {type(exc).__name__}: {exc}"}}
    components = body.get("components", {})
    report = {name: components.get(name, {"status": "error", "error": "not reported by the server"})
              for name in names}
    request_id = response.headers.get("x-request-id")
    if request_id and any(c.get("status") != "ok" for c in report.values()):
        console.print(f"[dim]the server's log has the details under request id {request_id}[/dim]")
    return report


def _print(console: Console, report: dict[str, dict[str, Any]]) -> None:
    table = Table("component", "status", "latency", "details", title="rag-ray health")
    for name, entry in report.items():
        status = str(entry.get("status", "error"))
        details = {k: v for k, v in entry.items() if k not in ("status", "latency_ms", "error")}
        shown = escape(", ".join(f"{k}={_short(v)}" for k, v in details.items()))
        if entry.get("error"):
            shown = f"[{COLOURS['error']}]{escape(str(entry['error']))}[/]" + (f"; {shown}" if shown else "")
        latency = f"{entry['latency_ms']:.0f} ms" if isinstance(entry.get("latency_ms"), int | float) else "-"
        table.add_row(name, f"[{COLOURS.get(status, 'red')}]{status}[/]", latency, shown)
    console.print(table)


def _short(value: Any) -> str:
    return json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
