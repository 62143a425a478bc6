"""`rag-cli audit list`: the audit log, newest first (read-only: nothing changes or removes an entry)."""

from __future__ import annotations

import json
from datetime import datetime

import typer
from rich.table import Table

from rag_ray.audit import AuditLog
from rag_ray.cli.context import console_from, open_db

app = typer.Typer(help="The audit log of security-relevant events", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, actor: str = typer.Option(None, "--actor", help="a user id or an actor name"),
          action: str = typer.Option(None, "--action", help="exact, or a prefix ending in '.' (user.)"),
          target: str = typer.Option(None, "--target", help="a target id (user, group, key, document …)"),
          outcome: str = typer.Option(None, "--outcome", help="success | failure | denied"),
          since: datetime = typer.Option(None, "--since", help="from (ISO date/time, UTC)"),
          until: datetime = typer.Option(None, "--until", help="until, exclusive (ISO date/time, UTC)"),
          limit: int = typer.Option(100, "--limit", min=1, max=1000),
          format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Audit events matching the filters, newest first."""
    with open_db(ctx) as db:
        entries = AuditLog(db).list(actor=actor, action=action, target=target, outcome=outcome, since=since,
                                    until=until, limit=limit)
    if format == "json":
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2, ensure_ascii=False))
        return
    table = Table("id", "at (UTC)", "actor", "action", "target", "outcome", "request id", "details", title="Audit")
    for e in entries:
        actor_text = e.actor_name or e.actor_id or ""
        table.add_row(str(e.id), e.at.strftime("%Y-%m-%d %H:%M:%S"), actor_text, e.action,
                      f"{e.target_type}:{e.target_id}" if e.target_id else e.target_type, e.outcome,
                      e.request_id or "", json.dumps(e.details, ensure_ascii=False)[:80])
    console_from(ctx).print(table)
