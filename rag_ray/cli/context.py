"""What every CLI command receives through ``ctx.obj``."""

from __future__ import annotations

from dataclasses import dataclass

import typer
from rich.console import Console

from rag_ray.config import Settings, load_settings


@dataclass
class CliContext:
    settings: Settings
    debug: bool = False
    verbose: bool = False
    console: Console = Console()  # noqa: RUF009 - one console for the process is what we want


def settings_from(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    return obj.settings if isinstance(obj, CliContext) else load_settings()


def console_from(ctx: typer.Context) -> Console:
    obj = ctx.find_root().obj
    return obj.console if isinstance(obj, CliContext) else Console()
