"""`rag-cli usage report`: LLM calls, tokens and cost per user, API key, provider and model."""

from __future__ import annotations

import json
from datetime import datetime

import typer
from rich.table import Table

from rag_ray.cli.context import console_from, open_db
from rag_ray.guard.service import GuardService

app = typer.Typer(help="LLM usage per user, API key, provider and model", no_args_is_help=True)


@app.command("report")
def report(ctx: typer.Context,
           since: datetime = typer.Option(None, "--since", help="from (ISO date/time, UTC)"),
           until: datetime = typer.Option(None, "--until", help="until, exclusive (ISO date/time, UTC)"),
           group_by: str = typer.Option("user,key,provider,model", "--group-by",
                                        help="comma separated: user, key, provider, model, route_class"),
           user: str = typer.Option(None, "--user", help="only this user (id or username)"),
           key: str = typer.Option(None, "--key", help="only this API key id"),
           provider: str = typer.Option(None, "--provider"), model: str = typer.Option(None, "--model"),
           format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Usage in [--since, --until), largest cost first."""
    dims = [d.strip() for d in group_by.split(",") if d.strip()]
    with open_db(ctx) as db:
        guard = GuardService(db)
        user_id = guard.resolve_subject("user", user) if user else None
        rows = guard.usage.report(since=since, until=until, group_by=dims, user_id=user_id, key_id=key,
                                  provider=provider, model=model)
    if format == "json":
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    shown = [*dims, *(["username"] if "user" in dims else [])]
    table = Table(*shown, "calls", "prompt tokens", "completion tokens", "cost (USD)", title="LLM usage")
    for r in rows:
        table.add_row(*(str(r.get(d) or "") for d in shown), str(r["calls"]), str(r["prompt_tokens"]),
                      str(r["completion_tokens"]), f"{r['cost_usd']:.6f}")
    console_from(ctx).print(table)
