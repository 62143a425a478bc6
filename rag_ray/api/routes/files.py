"""`POST /extract/filesystem` (admin): ingest a directory under the allowed roots as a background job."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from rag_ray.api.deps import AdminDep, ServicesDep
from rag_ray.ingest.file_ingest import FileIngestRequest
from rag_ray.ingest.notify import check_callback_url
from rag_ray.ingest.scan import check_path
from rag_ray.types import Acl

router = APIRouter(tags=["ingest"])


class BatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_workers: int = Field(2, ge=1, le=256, description="upper bound of the embedding actor pool")
    batch_size: int = Field(64, ge=1, le=4096, description="chunks per embedding batch")
    memory_limit_mb: int = Field(2048, ge=128, le=1_048_576)
    enable_adaptive_batching: bool = True
    processing_strategy: Literal["priority_based", "fifo", "size_based"] = "priority_based"


class FilesystemExtractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "directory": "/path/to/documents", "file_patterns": ["*.pdf", "*.docx", "*.txt"],
        "exclude_patterns": ["*.tmp"], "batch_config": {"max_workers": 8, "batch_size": 100}}]})

    directory: str = Field(min_length=1, max_length=4096)
    recursive: bool = True
    batch_config: BatchConfig = Field(default_factory=BatchConfig)
    file_patterns: list[str] = Field(default_factory=list, max_length=64)
    exclude_patterns: list[str] = Field(default_factory=list, max_length=64)
    progress_callback_url: str | None = Field(None, max_length=2048)
    owner_id: str | None = Field(None, max_length=128, description="defaults to the caller")
    group_ids: list[str] = Field(default_factory=list, max_length=256)
    visibility: Literal["private", "group", "public"] | None = None
    only_changed: bool = True


@router.post("/extract/filesystem", status_code=202, summary="Ingest a directory (admin; returns a job id)")
async def extract_filesystem(body: FilesystemExtractRequest, principal: AdminDep,
                             services: ServicesDep) -> dict[str, Any]:
    if body.progress_callback_url:
        check_callback_url(services.settings, body.progress_callback_url)
    groups = tuple(body.group_ids)
    visibility = body.visibility or ("group" if groups else "public")
    directory = check_path(body.directory, field="directory")  # NUL bytes, overlong names: 422 before any syscall
    request = FileIngestRequest(path=directory, recursive=body.recursive, include=body.file_patterns,
                                exclude=body.exclude_patterns, only_changed=body.only_changed,
                                acl=Acl(body.owner_id or principal.user_id, groups, visibility),
                                callback_url=body.progress_callback_url)
    job_id = services.file_jobs.submit(request, principal, overrides={
        "embed_concurrency_max": body.batch_config.max_workers,
        "embedding_batch_size": max(1, body.batch_config.batch_size // 4)})
    return {"job_id": job_id, "status": services.jobs.get(job_id, with_errors=False).status,
            "status_url": f"/jobs/{job_id}"}
