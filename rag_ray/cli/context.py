"""What every CLI command receives through ``ctx.obj``."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer
from rich.console import Console

from rag_ray.config import Settings, load_settings


def new_console(*, stderr: bool = False) -> Console:
    """A console that never breaks a line itself: paths, URLs and ids stay whole in logs and pipes (a terminal wraps
    them for display). Rich fixes the width from ``COLUMNS`` when a console is built: the context's console is built
    when a command runs; the module-level ones of the older command groups at import (their tables keep that width)."""
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
