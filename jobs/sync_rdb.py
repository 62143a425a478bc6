"""Ray Data job: sync relational database tables into Milvus (full or incremental).

    python -m jobs.sync_rdb --url-env PG_URL [--mode incremental --incremental-column updated_at]
    python -m jobs.sync_rdb --url sqlite:////data/chinook.sqlite --include-tables Album,Track
    python -m jobs.sync_rdb --source NAME [--mode full]
    ray job submit --working-dir . -- python -m jobs.sync_rdb --source NAME
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from rag_ray.config import Settings, load_settings
from rag_ray.errors import InvalidInput, RagError
from rag_ray.ingest.executor import Executor, LocalExecutor
from rag_ray.ingest.rdb_sync import RdbIngestor, RdbSyncRequest, RdbSyncSummary
from rag_ray.ingest.supervise import check_reachable, job_lifecycle
from rag_ray.ingest.tracking import JobLimits, JobStore, ProgressListener
from rag_ray.runtime import Runtime, ensure_milvus
from rag_ray.sources.rdb.config import DatabaseConfig
from rag_ray.sources.rdb.state import get_source, mark_synced
from rag_ray.types import Acl


def make_executor(settings: Settings, *, use_ray: bool) -> Executor:
    if not use_ray:
        return LocalExecutor(batch_size=256)
    from jobs.ray_executor import RayDataExecutor, init_ray

    init_ray(settings)
    # one block per key-range partition, so partitions are read by parallel Ray tasks
    return dataclasses.replace(RayDataExecutor.from_settings(settings), files_per_block=1)


def build_rdb_ingestor(runtime: Runtime, *, use_ray: bool = True) -> RdbIngestor:
    settings = runtime.settings
    ingestor = RdbIngestor(runtime.db, runtime.store, make_executor(settings, use_ray=use_ray), runtime.stages(),
                           chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap)
    ingestor.jobs = JobStore(runtime.db, JobLimits.from_settings(settings))  # admission and time limits
    return ingestor


def with_connect_timeout(settings: Settings, request: RdbSyncRequest) -> RdbSyncRequest:
    """The request with the configured source connect timeout (``RAG_RDB_CONNECT_TIMEOUT_S``), so an unreachable
    database fails the job in seconds with the driver's reason."""
    return dataclasses.replace(request, database=request.database.with_connect_timeout(settings.rdb_connect_timeout_s))


def run_rdb_job(settings: Settings, request: RdbSyncRequest, job_id: str | None = None,
                listeners: list[ProgressListener] | None = None, *, use_ray: bool = True) -> RdbSyncSummary:
    """Run one sync (on Ray unless ``use_ray`` is False; starts Milvus Lite if needed).

    With ``job_id`` (a job recorded by the API) the whole driver runs supervised — queued until admitted, stopped
    at its deadline — and a failure to reach Milvus or start Ray fails the job with the reason."""
    milvus = ensure_milvus(settings)
    try:
        with Runtime(settings) as runtime, \
                job_lifecycle(JobStore(runtime.db, JobLimits.from_settings(settings)), job_id):
            check_reachable(settings.milvus_address, settings.jobs_connect_timeout_s, "the vector store (Milvus)")
            request = with_connect_timeout(settings, request)
            summary = build_rdb_ingestor(runtime, use_ray=use_ray).run(request, job_id=job_id, listeners=listeners)
            if request.source_name and summary.status == "succeeded":
                mark_synced(runtime.db, request.source_name, summary.job_id)
            return summary
    finally:
        if milvus is not None:
            milvus.stop()


def source_request(settings: Settings, name: str, mode: str | None = None) -> RdbSyncRequest:
    """The request of a named source registered with `rag-cli rdb sources add`."""
    with Runtime(settings) as runtime:
        return RdbSyncRequest.from_source(get_source(runtime.db, settings.jwt_secret(), name), mode)


def run_source_job(settings: Settings, name: str, mode: str | None = None,
                   listeners: list[ProgressListener] | None = None, *, use_ray: bool = True) -> RdbSyncSummary:
    return run_rdb_job(settings, source_request(settings, name, mode), listeners=listeners, use_ray=use_ray)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.sync_rdb", description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="SQLAlchemy URL (prefer --url-env: command lines are visible to others)")
    where.add_argument("--url-env", help="name of an environment variable holding the URL")
    where.add_argument("--source", help="a named source (rag-cli rdb sources add)")
    p.add_argument("--mode", choices=["full", "incremental"], default=None)
    p.add_argument("--include-tables", default="", help="comma separated")
    p.add_argument("--exclude-tables", default="", help="comma separated")
    p.add_argument("--incremental-column", default=None)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--max-rows", type=int, default=None)
    p.add_argument("--validate", action="store_true", help="type-check rows; failing rows become job errors")
    p.add_argument("--schema", default=None)
    p.add_argument("--source-name", default="", help="name the source in ids/provenance (default: the URL)")
    p.add_argument("--owner", default="system")
    p.add_argument("--groups", default="", help="comma separated group ids")
    p.add_argument("--visibility", choices=["private", "group", "public"], default=None)
    p.add_argument("--local", action="store_true", help="run in-process instead of on Ray")
    p.add_argument("--env-file", default=None)
    return p.parse_args(argv)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def request_from_args(args: argparse.Namespace) -> RdbSyncRequest:
    url = args.url or os.environ.get(args.url_env or "", "")
    if not url:
        raise InvalidInput(f"environment variable {args.url_env} is not set", field="url_env")
    groups = tuple(_split(args.groups))
    visibility = args.visibility or ("group" if groups else "public")
    return RdbSyncRequest(database=DatabaseConfig.from_url(url, schema=args.schema), source_name=args.source_name,
                          mode=args.mode or "full", include_tables=_split(args.include_tables),
                          exclude_tables=_split(args.exclude_tables), incremental_column=args.incremental_column,
                          batch_size=args.batch_size, max_rows=args.max_rows, validate_data=args.validate,
                          acl=Acl(args.owner, groups, visibility))  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args.env_file)
        if args.source:
            summary = run_source_job(settings, args.source, args.mode, use_ray=not args.local)
        else:
            summary = run_rdb_job(settings, request_from_args(args), use_ray=not args.local)
    except RagError as exc:
        print(json.dumps(exc.to_dict()), file=sys.stderr)
        return 2
    print(json.dumps(summary.to_dict(), default=str))
    return 0 if summary.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
