"""`uv run main.py [options]`: the rag-ray server, exactly as `rag-server` and `rag-cli serve` start it.

Options as for `rag-server`: --env-file, --host, --port, --reload, ... (`uv run main.py --help`).
"""

from rag_ray.cli.server_main import main

if __name__ == "__main__":
    main()
