"""Index lifecycle (admin): the collections behind the ``RAG_COLLECTION`` alias, rebuilds as jobs, the gated switch,
rollback and drop (``rag_ray.index``; the same operations as `rag-cli index`).

A rebuild answers 202 with a job id (progress, pause, resume and cancel under ``/jobs/{id}``). ``switch`` evaluates
the candidate against the live collection on the configured eval set (``RAG_EVAL_QUERIES``/``RAG_EVAL_QRELS``) and
answers 409 ``evaluation_gate_failed`` with the comparison when it scores worse; ``force`` skips the gate.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from rag_ray.api.deps import AdminDep, ServicesDep
from rag_ray.index.lifecycle import RebuildRequest

router = APIRouter(prefix="/admin/index", tags=["admin", "index"])


class RebuildBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"embedding": "local:all-MiniLM-L6-v2", "chunk_size": 600}]})
    embedding: str | None = Field(None, max_length=255, description="PROVIDER:MODEL (default: the live one's)")
    chunk_size: int | None = Field(None, ge=1, le=100_000, description="default: the live collection's")
    chunk_overlap: int | None = Field(None, ge=0, le=100_000)


class SwitchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    collection: str | None = Field(None, max_length=255, description="default: the newest ready collection")
    force: bool = Field(False, description="switch without the evaluation gate and with ingest jobs open")
    tolerance: float | None = Field(None, ge=0.0, le=1.0, description="default RAG_EVAL_TOLERANCE")


@router.get("", summary="Collections behind the alias: models, dimensions, rows, which is live")
def list_collections(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    lifecycle = services.index.lifecycle
    return {"alias": lifecycle.alias, "collections": [s.to_dict() for s in lifecycle.statuses()]}


@router.post("/rebuild", status_code=202, summary="Build a collection with another model or chunking (a job)")
def rebuild(body: RebuildBody, principal: AdminDep, services: ServicesDep) -> dict[str, Any]:
    request = RebuildRequest(body.embedding, body.chunk_size, body.chunk_overlap)
    job_id = services.index.submit_rebuild(request, principal.user_id)
    return {"job_id": job_id, "status": "queued"}


@router.post("/switch", summary="Point the alias at a rebuilt collection when the evaluation gate passes")
def switch(body: SwitchBody, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    index = services.index
    gate = None if body.force else index.gate(body.tolerance)
    result = index.lifecycle.switch(body.collection, gate=gate, force=body.force)
    return {**result.to_dict(), "configure": result.config_hint()}


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = Field(False, description="roll back also while ingest jobs are open")


@router.post("/rollback", summary="Point the alias back at the collection live before the last switch")
def rollback(_: AdminDep, services: ServicesDep, body: RollbackBody | None = None) -> dict[str, Any]:
    result = services.index.lifecycle.rollback(force=body.force if body else False)
    return {**result.to_dict(), "configure": result.config_hint()}


@router.delete("/{name}", summary="Drop a collection that is not live")
def drop(name: str, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    services.index.lifecycle.drop(name)
    return {"dropped": name}
