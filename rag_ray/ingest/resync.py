"""Re-sync of the file paths ingested before (`rag-cli data sync --source filesystem`).

Every file job records its request (``FileIngestRequest.describe``) in the metadata DB. A re-sync takes the latest
request of each path and runs it again with ``only_changed``: new and changed files are (re)ingested, files deleted
since are removed from the store, unchanged ones are skipped. A path that no longer exists is reported, not synced
(its documents go with ``rag-cli data cleanup --orphaned``). Uploads (``<data dir>/uploads``) belong to the documents
API and are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from rag_ray.ingest.file_ingest import FileIngestRequest
from rag_ray.metadata import JobRecord, MetadataDB
from rag_ray.types import Acl, Visibility

FILESYSTEM_SOURCE = "filesystem"
_VISIBILITIES = ("private", "group", "public")


@dataclass
class ResyncPlan:
    requests: list[FileIngestRequest] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # paths ingested before that are gone


def previous_file_requests(db: MetadataDB, *, exclude_under: Sequence[Path] = ()) -> ResyncPlan:
    """The latest ingest request of every path ingested before (oldest path first), as re-sync requests."""
    latest: dict[str, dict[str, Any]] = {}
    with db.session() as s:
        rows = s.execute(select(JobRecord.params).where(JobRecord.kind == "files")
                         .order_by(JobRecord.created_at.desc()))
        for (params,) in rows:
            path = (params or {}).get("path")
            if path and path not in latest:
                latest[path] = params
    plan = ResyncPlan()
    for path, params in sorted(latest.items()):
        location = Path(path)
        if any(location.is_relative_to(root) for root in exclude_under):
            continue
        if location.exists():
            plan.requests.append(resync_request(params))
        else:
            plan.missing.append(path)
    return plan


def resync_request(params: dict[str, Any]) -> FileIngestRequest:
    """The recorded request again, for changed files only."""
    visibility: Visibility = params["visibility"] if params.get("visibility") in _VISIBILITIES else "private"
    acl = Acl(str(params.get("owner_id") or "system"), tuple(params.get("group_ids") or ()), visibility)
    return FileIngestRequest(path=Path(params["path"]), recursive=bool(params.get("recursive", True)),
                             file_types=list(params.get("file_types") or []) or None,
                             include=tuple(params.get("include") or ()), exclude=tuple(params.get("exclude") or ()),
                             acl=acl, only_changed=True, enrichment_level=params.get("enrichment_level"))
