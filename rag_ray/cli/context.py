"""What every CLI command receives through ``ctx.obj``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NoReturn

import typer
from rich.console import Console

from rag_ray.config import Settings, load_settings
from rag_ray.errors import RagError
from rag_ray.metadata import MetadataDB


def new_console(*, stderr: bool = False) -> Console:
    """A console that never breaks a line itself: paths, URLs and ids stay whole in logs and pipes (a terminal wraps
    them for display). Rich fixes the width from ``COLUMNS`` when a console is built, so commands build theirs when
    they run (``console_from``), never at import."""
    return Console(stderr=stderr, soft_wrap=True)


@dataclass
class CliContext:
    settings: Settings
    debug: bool = False
    verbose: bool = False
    console: Console = field(default_factory=new_console)


def settings_from(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    return obj.settings if isinstance(obj, CliContext) else load_settings()


def console_from(ctx: typer.Context) -> Console:
    obj = ctx.find_root().obj
    return obj.console if isinstance(obj, CliContext) else new_console()


def fail(console: Console, exc: RagError) -> NoReturn:
    """Print a library error, naming its field, and exit with status 1."""
    where = f" ({exc.field})" if exc.field else ""
    console.print(f"[red]error{where}:[/red] {exc.message}")
    raise typer.Exit(1)


@contextmanager
def open_db(ctx: typer.Context) -> Iterator[MetadataDB]:
    """The metadata DB of the command's settings; a library error inside becomes a printed error and exit 1."""
    db = MetadataDB.from_settings(settings_from(ctx))
    try:
        yield db
    except RagError as exc:
        fail(console_from(ctx), exc)
    finally:
        db.dispose()
