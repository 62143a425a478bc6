"""`rag-cli user create|list|set-active|set-role|group-create|group-list|group-add|group-remove|api-key`."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from rag_ray.access import users
from rag_ray.cli.context import console_from, open_db

app = typer.Typer(help="Manage users and groups", no_args_is_help=True)


@app.command()
def create(ctx: typer.Context,
           username: str = typer.Argument(None, help="login name (or use --username)", show_default=False),
           username_opt: str = typer.Option(None, "--username", "-u", help="login name"),
           email: str = typer.Option(None, "--email"),
           password: str = typer.Option(None, "--password", help="prompted (hidden) when missing"),
           role: str = typer.Option("user", "--role", help=f"one of {', '.join(users.ROLES)}")) -> None:
    """Create a user."""
    console = console_from(ctx)
    name = username or username_opt
    if not name:
        console.print("[red]error:[/red] give a USERNAME (argument or --username)")
        raise typer.Exit(2)
    secret = password or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with open_db(ctx) as db:
        info = users.create_user(db, name, secret, email=email, role=role)
    console.print(f"created user [bold]{info.username}[/bold] id={info.user_id} role={info.role}")


@app.command("list")
def list_(ctx: typer.Context, role: str = typer.Option(None, "--role"),
          active: bool = typer.Option(None, "--active/--inactive", help="only active (or inactive) users"),
          format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """List users (filters: --role, --active/--inactive)."""
    with open_db(ctx) as db:
        found = users.list_users(db, role=role, active=active)
    if format == "json":
        typer.echo(json.dumps([u.to_dict() for u in found], indent=2, ensure_ascii=False))
        return
    table = Table("user_id", "username", "email", "role", "active", "groups", "created", title="Users")
    for u in found:
        table.add_row(u.user_id, u.username, u.email or "", u.role, "yes" if u.active else "no",
                      ",".join(u.group_ids), u.created_at.strftime("%Y-%m-%d %H:%M"))
    console_from(ctx).print(table)


@app.command("set-active")
def set_active(ctx: typer.Context, user: str, active: bool = typer.Option(True, "--active/--inactive")) -> None:
    """Activate or deactivate a user (effective on their next request)."""
    with open_db(ctx) as db:
        info = users.set_active(db, user, active)
    console_from(ctx).print(f"{info.username}: active={info.active}")


@app.command("set-role")
def set_role(ctx: typer.Context, user: str, role: str) -> None:
    """Change a user's role."""
    with open_db(ctx) as db:
        info = users.set_role(db, user, role)
    console_from(ctx).print(f"{info.username}: role={info.role}")


@app.command("group-create")
def group_create(ctx: typer.Context, name: str, description: str = typer.Option("", "--description"),
                 group_id: str = typer.Option(None, "--id", help="id stamped on chunks (default: the name)")) -> None:
    """Create a group."""
    with open_db(ctx) as db:
        info = users.create_group(db, name, description=description, group_id=group_id)
    console_from(ctx).print(f"created group [bold]{info.name}[/bold] id={info.group_id}")


@app.command("group-list")
def group_list(ctx: typer.Context, format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """List groups and their members."""
    with open_db(ctx) as db:
        found = users.list_groups(db)
    if format == "json":
        typer.echo(json.dumps([g.to_dict() for g in found], indent=2, ensure_ascii=False))
        return
    table = Table("group_id", "name", "members", "description", title="Groups")
    for g in found:
        table.add_row(g.group_id, g.name, str(len(g.member_ids)), g.description)
    console_from(ctx).print(table)


@app.command("group-add")
def group_add(ctx: typer.Context, user: str, group: str) -> None:
    """Add USER (id or name) to GROUP (id or name)."""
    with open_db(ctx) as db:
        info = users.add_member(db, user, group)
    console_from(ctx).print(f"{user} is a member of {info.name} ({len(info.member_ids)} members)")


@app.command("group-remove")
def group_remove(ctx: typer.Context, user: str, group: str) -> None:
    """Remove USER from GROUP (effective on their next request)."""
    with open_db(ctx) as db:
        info = users.remove_member(db, user, group)
    console_from(ctx).print(f"{user} removed from {info.name}")


@app.command("api-key")
def api_key(ctx: typer.Context, user: str, name: str = typer.Option("", "--name"),
            expires_days: int = typer.Option(None, "--expires-days")) -> None:
    """Create an API key for USER; the key is printed once and cannot be shown again."""
    with open_db(ctx) as db:
        made = users.create_api_key(db, user, name=name, expires_days=expires_days)
    console_from(ctx).print(f"API key id={made.info.key_id} for {user} (shown once, store it now):")
    typer.echo(made.key)
