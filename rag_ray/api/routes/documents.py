"""Documents of the caller: upload a file for ingestion, list, get, delete (chunks included).

Uploads are capped at ``RAG_MAX_UPLOAD_BYTES`` (413) and limited to the supported file types (422). The cap
applies before the route runs (``rag_ray.api.limits``: from ``Content-Length``, or as the body streams); the route
checks the file's exact size.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Form, Query, UploadFile

from rag_ray.api.deps import PrincipalDep, ServicesDep
from rag_ray.errors import InvalidInput, PayloadTooLarge, PermissionDenied
from rag_ray.ingest.file_jobs import upload_request

router = APIRouter(prefix="/documents", tags=["documents"])


@router.post("/upload", status_code=202, summary="Upload a file; it is ingested for the caller in the background")
async def upload(principal: PrincipalDep, services: ServicesDep, file: UploadFile = File(...),
                 visibility: str = Form("private"), group_ids: str = Form("")) -> dict[str, Any]:
    if visibility not in ("private", "group", "public"):
        raise InvalidInput("visibility must be private, group or public", field="visibility")
    groups = tuple(g.strip() for g in group_ids.split(",") if g.strip())
    if not principal.is_admin and not set(groups) <= set(principal.group_ids):
        raise PermissionDenied("you can only share with groups you belong to", field="group_ids")
    limit = services.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"upload exceeds {limit} bytes", field="file")
    service = services.file_jobs
    path = service.save_upload(principal, file.filename or "", data)
    job_id = service.submit(upload_request(path, principal, groups, visibility), principal, confine=False)
    return {"job_id": job_id, "file_name": path.name, "status_url": f"/jobs/{job_id}"}


@router.get("", summary="The caller's documents (admins: all)")
async def list_documents(principal: PrincipalDep, services: ServicesDep, limit: int = Query(100, ge=1, le=1000),
                         offset: int = Query(0, ge=0)) -> dict[str, Any]:
    return {"documents": services.file_jobs.list_documents(principal, limit, offset)}


@router.get("/{doc_id}", summary="One document of the caller")
async def get_document(doc_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    return services.file_jobs.get_document(principal, doc_id)


@router.delete("/{doc_id}", summary="Delete a document and its chunks")
async def delete_document(doc_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    removed = services.file_jobs.delete_document(principal, doc_id)
    return {"doc_id": doc_id, "deleted": True, "chunks_deleted": removed}
