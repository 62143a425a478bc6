"""`rag-cli`: the admin CLI. One module per command group; this file only wires them."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from rag_ray.audit import bind_actor, cli_actor
from rag_ray.cli import audit as audit_cmd
from rag_ray.cli import config_cmd, data, database, eval_cmd, index, model, rdb, user
from rag_ray.cli import health as health_cmd
from rag_ray.cli import limits as limits_cmd
from rag_ray.cli import usage as usage_cmd
from rag_ray.cli.context import CliContext, console_from, settings_from
from rag_ray.config import Settings, load_settings
from rag_ray.errors import RagError

# Ray's `uv run` hook would ship the project dir (with .venv) to every worker; local workers share our venv.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

app = typer.Typer(help="rag-ray: a RAG server on Ray", no_args_is_help=True, pretty_exceptions_show_locals=False)



@app.callback()
def main_options(ctx: typer.Context,
                 debug: bool = typer.Option(False, "--debug", help="debug logging (stderr and logs/app.log)"),
                 verbose: bool = typer.Option(False, "--verbose", "-v", help="informational log lines on stderr"),
                 env_file: Path | None = typer.Option(None, "--env-file", help="read settings from this .env")) -> None:
    if env_file is not None and not env_file.exists():
        raise typer.BadParameter(f"{env_file} does not exist", param_hint="--env-file")
    try:
        settings = load_settings(env_file)
    except RagError as exc:
        typer.echo(f"configuration error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    _configure_logging(ctx, settings, debug=debug, verbose=verbose)
    log = logging.getLogger("rag_ray.cli")
    log.info("rag-cli %s (settings: %s)", ctx.invoked_subcommand, env_file or "environment")
    log.debug("effective settings (secrets masked): %s", settings.masked())
    ctx.obj = CliContext(settings=settings, debug=debug, verbose=verbose)
    bind_actor(cli_actor())  # audit entries written by this command name the operator


def _configure_logging(ctx: typer.Context, settings: Settings, *, debug: bool, verbose: bool) -> None:
    """Logs of this command: stderr (warnings unless --verbose/--debug; the server: RAG_LOG_LEVEL) and
    logs/app.log (RAG_LOG_LEVEL, or DEBUG with --debug); undone when the command ends."""
    from rag_ray.observability.logs import configure_logging, reset_logging

    quiet = None if ctx.invoked_subcommand == "serve" else logging.WARNING
    stderr_level = logging.DEBUG if debug else logging.INFO if verbose else quiet
    configure_logging(settings, stderr_level=stderr_level, file_level=logging.DEBUG if debug else None)
    ctx.call_on_close(reset_logging)


@app.command()
def serve(ctx: typer.Context,
          host: str | None = typer.Option(None, "--host", help="bind address (default API_HOST)"),
          port: int | None = typer.Option(None, "--port", help="port (default API_PORT)"),
          reload: bool = typer.Option(False, "--reload", help="development: restart the server when a *.py file "
                                      "under the watched directories changes"),
          reload_dirs: list[Path] = typer.Option([], "--reload-dir", help="watch this directory instead of the "
                                                 "project's packages (repeatable)")) -> None:
    """Start the server: local Ray, Milvus Lite, the metadata DB, models and the HTTP API (also `rag-server`)."""
    from rag_ray.cli.serve_cmd import serve_command

    settings = settings_from(ctx)
    updates = {k: v for k, v in {"api_host": host, "api_port": port}.items() if v is not None}
    serve_command(settings.model_copy(update=updates), console_from(ctx), reload=reload, reload_dirs=reload_dirs)


app.command("health")(health_cmd.health)


for group, module in (("data", data), ("config", config_cmd), ("model", model), ("user", user),
                      ("database", database), ("rdb", rdb), ("index", index), ("eval", eval_cmd)):
    app.add_typer(module.app, name=group)
for group, module in (("limits", limits_cmd), ("usage", usage_cmd), ("audit", audit_cmd)):  # guardrails
    app.add_typer(module.app, name=group)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
