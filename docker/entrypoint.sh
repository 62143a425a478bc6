#!/bin/sh
# Container entry point (the Dockerfile's ENTRYPOINT, under tini). Checks that the data dir is writable, then execs
# the command, so the server itself receives SIGTERM:
#   (no arguments), serve [opts], -opts  → rag-server [opts]      (the HTTP server)
#   data ingest ..., user list ...       → rag-cli data ingest ... (any rag-cli command group)
#   python -m jobs.ingest_files ..., sh  → run as given            (anything on PATH)
set -eu

data_dir="${RAG_DATA_DIR:-./data}"
mkdir -p "$data_dir" 2>/dev/null || true
if [ ! -d "$data_dir" ] || [ ! -w "$data_dir" ]; then
  echo "entrypoint: RAG_DATA_DIR=$data_dir is not a writable directory for uid $(id -u);" \
       "mount a volume it owns (the image's user is 10001)" >&2
  exit 73  # EX_CANTCREAT
fi

[ "$#" -gt 0 ] || set -- rag-server
case "$1" in
  serve) shift; set -- rag-server "$@" ;;
  -*) set -- rag-server "$@" ;;
esac
command -v "$1" >/dev/null 2>&1 || set -- rag-cli "$@"
exec "$@"
