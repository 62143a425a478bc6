"""`rag-cli limits set|list|delete|lockouts|unlock`: limits and budgets per user, API key and group; login lockouts.

Changes take effect on every replica within ``RAG_LIMITS_CACHE_S`` and are audited (actor ``cli:<account>``)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from rag_ray.access.service import AuthService
from rag_ray.audit import current_actor
from rag_ray.cli.context import console_from, open_db, settings_from
from rag_ray.guard.context import ALL
from rag_ray.guard.service import GuardService

app = typer.Typer(help="Limits and budgets per user, API key and group; login lockouts", no_args_is_help=True)


@app.command("set")
def set_(ctx: typer.Context,
         subject_kind: str = typer.Argument(..., help="user | key | group"),
         subject: str = typer.Argument(..., help="user id or username, API key id, group id or name, or *"),
         metric: str = typer.Argument(..., help="requests | tokens | cost_usd"),
         limit: float = typer.Argument(..., help="requests, tokens, or USD per period"),
         period: str = typer.Option("minute", "--period", help="minute | hour | day | month (UTC)"),
         route_class: str = typer.Option(
             ALL, "--route-class", help="requests: auth | llm | retrieval | ingest | admin | other | all")) -> None:
    """Set a limit: e.g. `limits set user alice requests 20 --route-class llm`, `limits set group eng cost_usd 50
    --period month`, `limits set user '*' tokens 200000 --period day`."""
    with open_db(ctx) as db:
        rule = GuardService(db).set_limit(subject_kind, subject, metric, period, limit, route_class=route_class,
                                          updated_by=current_actor().name)
    console_from(ctx).print(f"limit {rule.limit_id}: {rule.describe(rule.subject_id)}")


@app.command("list")
def list_(ctx: typer.Context, subject_kind: str = typer.Option(None, "--kind", help="user | key | group"),
          subject: str = typer.Option(None, "--subject", help="an id or name (with --kind), or *"),
          metric: str = typer.Option(None, "--metric"),
          format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """List limits and budgets."""
    with open_db(ctx) as db:
        guard = GuardService(db)
        subject_id = guard.resolve_subject(subject_kind, subject) if subject_kind and subject and subject != "*" \
            else subject
        rules = guard.limits.rules(subject_kind=subject_kind, subject_id=subject_id, metric=metric)
    if format == "json":
        typer.echo(json.dumps([r.to_dict() for r in rules], indent=2, ensure_ascii=False))
        return
    table = Table("limit_id", "subject", "metric", "route class", "period", "limit", "updated by", title="Limits")
    for r in rules:
        table.add_row(r.limit_id, f"{r.subject_kind}:{r.subject_id}", r.metric, r.route_class, r.period,
                      f"{r.value:g}", r.updated_by)
    console_from(ctx).print(table)


@app.command("delete")
def delete(ctx: typer.Context, limit_id: str) -> None:
    """Remove a limit or budget."""
    with open_db(ctx) as db:
        rule = GuardService(db).limits.delete(limit_id)
    console_from(ctx).print(f"removed {rule.limit_id}: {rule.describe(rule.subject_id)}")


@app.command("lockouts")
def lockouts(ctx: typer.Context, format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Usernames and client addresses locked out now (failed logins, invalid API keys / refresh tokens)."""
    with open_db(ctx) as db:
        locks = AuthService(db, settings_from(ctx)).lockout.locks()
    if format == "json":
        typer.echo(json.dumps([lock.to_dict() for lock in locks], indent=2))
        return
    table = Table("kind", "subject", "failures", "locked until (epoch s)", title="Lockouts")
    for lock in locks:
        table.add_row(lock.kind, lock.subject, str(lock.failures), str(lock.locked_until))
    console_from(ctx).print(table)


@app.command("unlock")
def unlock(ctx: typer.Context, user: str = typer.Argument(..., help="user id or username")) -> None:
    """Lift a user's login lockout."""
    with open_db(ctx) as db:
        result = AuthService(db, settings_from(ctx)).unlock(user)
    state = "unlocked" if result["was_locked"] else "was not locked; failed attempts cleared"
    console_from(ctx).print(f"{result['username']}: {state}")
