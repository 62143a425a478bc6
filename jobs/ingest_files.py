"""Ray Data job: ingest a directory of files into Milvus.

    python -m jobs.ingest_files DIR [--recursive] [--file-types pdf,docx] [--exclude '*.tmp'] ...
    ray job submit --working-dir . -- python -m jobs.ingest_files DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobs.ray_executor import RayDataExecutor
from rag_ray.config import Settings, load_settings
from rag_ray.errors import RagError
from rag_ray.ingest.file_ingest import FileIngestor, FileIngestRequest, IngestSummary
from rag_ray.ingest.notify import callback_listeners
from rag_ray.ingest.source_acl import SourceAclMap
from rag_ray.ingest.supervise import check_reachable, job_lifecycle
from rag_ray.ingest.tracking import JobLimits, JobStore, ProgressListener
from rag_ray.runtime import Runtime, ensure_milvus
from rag_ray.types import Acl


def build_ingestor(runtime: Runtime, *, confine: bool) -> FileIngestor:
    settings = runtime.settings
    roots = settings.resolved_allowed_roots if confine else None
    ingestor = FileIngestor(runtime.db, runtime.store, RayDataExecutor.from_settings(settings), runtime.stages(),
                            allowed_roots=roots, source_acl=SourceAclMap.from_settings(settings))
    ingestor.jobs = job_store(runtime)  # admission and time limits from the settings
    return ingestor


def job_store(runtime: Runtime) -> JobStore:
    return JobStore(runtime.db, JobLimits.from_settings(runtime.settings))


def check_store_reachable(settings: Settings) -> None:
    check_reachable(settings.milvus_address, settings.jobs_connect_timeout_s, "the vector store (Milvus)")


def run_file_job(settings: Settings, request: FileIngestRequest, job_id: str | None = None,
                 listeners: list[ProgressListener] | None = None, *, confine: bool = False) -> IngestSummary:
    """Run one file ingest on Ray (joins or starts Ray for a pipeline; starts Milvus Lite if needed).

    With ``job_id`` (a job recorded by the API) the whole driver runs supervised — queued until admitted, stopped
    at its deadline — and a failure to reach Milvus or start Ray fails the job with the reason."""
    milvus = ensure_milvus(settings)
    try:
        with Runtime(settings) as runtime, job_lifecycle(job_store(runtime), job_id), \
                callback_listeners(settings, request) as callbacks:
            check_store_reachable(settings)  # Ray starts with the first pipeline (RayDataExecutor.connect)
            return build_ingestor(runtime, confine=confine).run(request, job_id=job_id,
                                                                listeners=[*(listeners or []), *callbacks])
    finally:
        if milvus is not None:
            milvus.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.ingest_files", description=__doc__.splitlines()[1])
    p.add_argument("path", type=Path)
    p.add_argument("--recursive", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--file-types", default="", help="comma separated, e.g. pdf,docx")
    p.add_argument("--include", action="append", default=[], help="glob, repeatable")
    p.add_argument("--exclude", action="append", default=[], help="glob, repeatable")
    p.add_argument("--owner", default="system")
    p.add_argument("--groups", default="", help="comma separated group ids")
    p.add_argument("--visibility", choices=["private", "group", "public"], default=None)
    p.add_argument("--all", action="store_true", help="re-ingest unchanged files too")
    p.add_argument("--env-file", default=None)
    return p.parse_args(argv)


def request_from_args(args: argparse.Namespace) -> FileIngestRequest:
    groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
    visibility = args.visibility or ("group" if groups else "public")
    return FileIngestRequest(path=args.path, recursive=args.recursive,
                             file_types=[t for t in args.file_types.split(",") if t.strip()] or None,
                             include=args.include, exclude=args.exclude,
                             acl=Acl(args.owner, groups, visibility),  # type: ignore[arg-type]  # argparse choices
                             only_changed=not args.all)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run_file_job(load_settings(args.env_file), request_from_args(args))
    except RagError as exc:
        print(json.dumps(exc.to_dict()), file=sys.stderr)
        return 2
    print(json.dumps(summary.to_dict(), default=str))
    return 0 if summary.status == "succeeded" else 1


def run_submitted_job(settings: Settings, request: FileIngestRequest, job_id: str, confine: bool) -> dict[str, object]:
    """Entry for jobs submitted through the API (a Ray task or a thread); the job record has the outcome."""
    return run_file_job(settings, request, job_id, confine=confine).to_dict()


if __name__ == "__main__":
    sys.exit(main())
