"""Job status and control: progress counters, rate, ETA, per-item errors; pause, resume, cancel.

Callers see their own jobs; admins see all. Someone else's job answers 404 like a missing one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query

from rag_ray.api.deps import PrincipalDep, ServicesDep
from rag_ray.errors import NotFound
from rag_ray.ingest.tracking import JobStore
from rag_ray.types import Principal

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _visible(jobs: JobStore, job_id: str, principal: Principal) -> None:
    if not principal.is_admin and jobs.owner(job_id) != principal.user_id:
        raise NotFound(f"job {job_id!r} not found", field="job_id")


@router.get("", summary="Recent jobs (own; admins: all)")
async def list_jobs(principal: PrincipalDep, services: ServicesDep,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    jobs = services.jobs.list(limit, created_by=None if principal.is_admin else principal.user_id)
    return {"jobs": [j.to_dict() for j in jobs]}


@router.get("/{job_id}", summary="Progress of one job")
async def get_job(job_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    jobs = services.jobs
    _visible(jobs, job_id, principal)
    return jobs.get(job_id).to_dict()


def _controlled(jobs: JobStore, job_id: str, principal: Principal, act: Callable[[str], object]) -> dict[str, Any]:
    _visible(jobs, job_id, principal)
    act(job_id)
    return jobs.get(job_id, with_errors=False).to_dict()


@router.post("/{job_id}/pause", summary="Pause a job")
async def pause_job(job_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    return _controlled(services.jobs, job_id, principal, services.jobs.pause)


@router.post("/{job_id}/resume", summary="Resume a job")
async def resume_job(job_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    return _controlled(services.jobs, job_id, principal, services.jobs.resume)


@router.post("/{job_id}/cancel", summary="Cancel a job")
async def cancel_job(job_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    return _controlled(services.jobs, job_id, principal, services.jobs.cancel)
