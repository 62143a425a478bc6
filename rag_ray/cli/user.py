"""`rag-cli user create|list|set-active|set-role|group-create|group-list|group-add|group-remove|api-key`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.table import Table

from rag_ray.access import users
from rag_ray.cli.context import new_console
from rag_ray.config import Settings, load_settings
from rag_ray.errors import RagError
from rag_ray.metadata import MetadataDB

app = typer.Typer(help="Manage users and groups", no_args_is_help=True)
console = new_console()


def settings_from(ctx: typer.Context) -> Settings:
    """The root command's settings (``ctx.obj.settings``), else settings from the environment."""
    obj = ctx.find_root().obj
    settings = getattr(obj, "settings", None)
    return settings if isinstance(settings, Settings) else load_settings()


@contextmanager
def open_db(ctx: typer.Context) -> Iterator[MetadataDB]:
    db = MetadataDB.from_settings(settings_from(ctx))
    try:
        yield db
    except RagError as exc:
        fail(exc)
    finally:
        db.dispose()


def fail(exc: RagError) -> NoReturn:
    field = f" ({exc.field})" if exc.field else ""
    console.print(f"[red]error{field}:[/red] {exc.message}")
    raise typer.Exit(1)


@app.command()
def create(ctx: typer.Context,
           username: str = typer.Argument(None, help="login name (or use --username)", show_default=False),
           username_opt: str = typer.Option(None, "--username", "-u", help="login name"),
           email: str = typer.Option(None, "--email"),
           password: str = typer.Option(None, "--password", help="prompted (hidden) when missing"),
           role: str = typer.Option("user", "--role", help=f"one of {', '.join(users.ROLES)}")) -> None:
    """Create a user."""
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
    console.print(table)


@app.command("set-active")
def set_active(ctx: typer.Context, user: str, active: bool = typer.Option(True, "--active/--inactive")) -> None:
    """Activate or deactivate a user (effective on their next request)."""
    with open_db(ctx) as db:
        info = users.set_active(db, user, active)
    console.print(f"{info.username}: active={info.active}")


@app.command("set-role")
def set_role(ctx: typer.Context, user: str, role: str) -> None:
    """Change a user's role."""
    with open_db(ctx) as db:
        info = users.set_role(db, user, role)
    console.print(f"{info.username}: role={info.role}")


@app.command("group-create")
def group_create(ctx: typer.Context, name: str, description: str = typer.Option("", "--description"),
                 group_id: str = typer.Option(None, "--id", help="id stamped on chunks (default: the name)")) -> None:
    """Create a group."""
    with open_db(ctx) as db:
        info = users.create_group(db, name, description=description, group_id=group_id)
    console.print(f"created group [bold]{info.name}[/bold] id={info.group_id}")


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
    console.print(table)


@app.command("group-add")
def group_add(ctx: typer.Context, user: str, group: str) -> None:
    """Add USER (id or name) to GROUP (id or name)."""
    with open_db(ctx) as db:
        info = users.add_member(db, user, group)
    console.print(f"{user} is a member of {info.name} ({len(info.member_ids)} members)")


@app.command("group-remove")
def group_remove(ctx: typer.Context, user: str, group: str) -> None:
    """Remove USER from GROUP (effective on their next request)."""
    with open_db(ctx) as db:
        info = users.remove_member(db, user, group)
    console.print(f"{user} removed from {info.name}")


@app.command("api-key")
def api_key(ctx: typer.Context, user: str, name: str = typer.Option("", "--name"),
            expires_days: int = typer.Option(None, "--expires-days")) -> None:
    """Create an API key for USER; the key is printed once and cannot be shown again."""
    with open_db(ctx) as db:
        made = users.create_api_key(db, user, name=name, expires_days=expires_days)
    console.print(f"API key id={made.info.key_id} for {user} (shown once, store it now):")
    typer.echo(made.key)
