"""`rag-cli`: the admin CLI. One module per command group; this file only wires them."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from rag_ray.cli import config_cmd, data, database, model, rdb, user
from rag_ray.cli.context import CliContext, console_from, settings_from
from rag_ray.config import load_settings
from rag_ray.errors import RagError

# Ray's `uv run` hook would ship the project dir (with .venv) to every worker; local workers share our venv.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

app = typer.Typer(help="rag-ray: a RAG server on Ray", no_args_is_help=True, pretty_exceptions_show_locals=False)



@app.callback()
def main_options(ctx: typer.Context,
                 debug: bool = typer.Option(False, "--debug", help="debug logging and tracebacks"),
                 verbose: bool = typer.Option(False, "--verbose", "-v", help="more output"),
                 env_file: Path | None = typer.Option(None, "--env-file", help="read settings from this .env")) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
    if env_file is not None and not env_file.exists():
        raise typer.BadParameter(f"{env_file} does not exist", param_hint="--env-file")
    try:
        settings = load_settings(env_file)
    except RagError as exc:
        typer.echo(f"configuration error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    ctx.obj = CliContext(settings=settings, debug=debug, verbose=verbose)


@app.command()
def serve(ctx: typer.Context,
          host: str | None = typer.Option(None, "--host", help="bind address (default API_HOST)"),
          port: int | None = typer.Option(None, "--port", help="port (default API_PORT)")) -> None:
    """Start the server: local Ray, Milvus Lite, the metadata DB, models and the HTTP API."""
    from rag_ray.cli.serve_cmd import run_server

    settings = settings_from(ctx)
    updates = {k: v for k, v in {"api_host": host, "api_port": port}.items() if v is not None}
    run_server(settings.model_copy(update=updates), console_from(ctx))


@app.command()
def health(ctx: typer.Context, url: str | None = typer.Option(None, "--url", help="server base URL")) -> None:
    """Ask a running server for its health."""
    import httpx

    settings = settings_from(ctx)
    base = url or f"http://{settings.api_host}:{settings.api_port}"
    try:
        response = httpx.get(f"{base}/health", timeout=10)
    except httpx.HTTPError as exc:
        console_from(ctx).print(f"[red]unreachable[/red] {base}: {exc}")
        raise typer.Exit(1) from None
    console_from(ctx).print_json(response.text)
    if response.status_code != 200 or response.json().get("status") != "ok":
        raise typer.Exit(1)


for group, module in (("data", data), ("config", config_cmd), ("model", model), ("user", user),
                      ("database", database), ("rdb", rdb)):
    app.add_typer(module.app, name=group)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
