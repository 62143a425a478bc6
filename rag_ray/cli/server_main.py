"""`rag-server` (and the top-level `main.py`): the server `rag-cli serve` starts, as one command for images, process
managers and `uv run rag-server` / `uv run main.py`.

    rag-server [--env-file F] [--debug] [--host H] [--port P] [--reload [--reload-dir D]...]

Global `rag-cli` options (``--env-file``, ``--debug``, ...) and `serve`'s own may come in any order: the arguments are
rearranged into `rag-cli [global options] serve [serve options]` and run by the same typer app, so both commands share
one code path (settings, production checks, signals, reload).
"""

from __future__ import annotations

import sys
from typing import Any


def cli_argv(args: list[str], group: Any) -> list[str]:
    """``args`` of `rag-server` → the arguments of `rag-cli ... serve ...`; ``group``: `rag-cli`'s click group."""
    global_opts = {name: param for param in group.params for name in (*param.opts, *param.secondary_opts)}
    before: list[str] = []
    after: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        param = global_opts.get(arg.split("=", 1)[0])
        if param is None or arg in ("--help", "-h"):
            after.append(arg)
        else:
            before.append(arg)
            takes_value = not getattr(param, "is_flag", False) and "=" not in arg
            if takes_value and i + 1 < len(args):
                i += 1
                before.append(args[i])
        i += 1
    return [*before, "serve", *after]


def main() -> None:
    import typer

    from rag_ray.cli.main import app

    group = typer.main.get_command(app)
    # The rewritten argv is also what `--reload` re-runs as its child (`python -m rag_ray.cli.main <argv>`).
    sys.argv = [sys.argv[0], *cli_argv(sys.argv[1:], group)]
    app(prog_name="rag-server")


if __name__ == "__main__":
    main()
