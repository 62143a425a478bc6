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
    """Per-job overrides of the ingest settings; a field left out keeps the server's setting."""

    model_config = ConfigDict(extra="forbid")

    max_workers: int | None = Field(None, ge=1, le=256, description="upper bound of the embedding actor pool "
                                    "(RAG_EMBED_CONCURRENCY_MAX)")
    batch_size: int | None = Field(None, ge=1, le=4096, description="chunks per embedding batch; where adaptive "
                                   "batching starts (RAG_EMBEDDING_BATCH_SIZE)")
    memory_limit_mb: int | None = Field(None, ge=128, le=1_048_576, description="the job's memory budget: Ray "
                                        "Data's object store limit and the adaptive batcher's bound "
                                        "(RAG_INGEST_MEMORY_LIMIT_MB)")
    enable_adaptive_batching: bool | None = Field(None, description="adapt the batch size to the measured "
                                                  "throughput within RAG_INGEST_BATCH_MIN..MAX")
    processing_strategy: Literal["priority_based", "fifo", "size_based"] | None = Field(
        None, description="file order: fifo (scan order), size_based (smallest first), priority_based (newest first)")

    def overrides(self) -> dict[str, Any]:
        """The settings this job runs with instead of the server's."""
        names = {"max_workers": "embed_concurrency_max", "batch_size": "embedding_batch_size",
                 "memory_limit_mb": "ingest_memory_limit_mb", "enable_adaptive_batching": "ingest_adaptive_batching",
                 "processing_strategy": "ingest_processing_strategy"}
        return {names[k]: v for k, v in self.model_dump(exclude_none=True).items()}


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
    job_id = services.file_jobs.submit(request, principal, overrides=body.batch_config.overrides())
    return {"job_id": job_id, "status": services.jobs.get(job_id, with_errors=False).status,
            "status_url": f"/jobs/{job_id}"}
