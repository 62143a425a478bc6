"""`POST /extract/rdb` (admin): sync a relational database into Milvus as a background job; schema
introspection and named sources.

Connections submitted over HTTP must name an allow-listed ``host[:port]`` (``RAG_RDB_ALLOWED_HOSTS``)
and cannot be SQLite files; named sources (registered by an operator with `rag-cli rdb sources add`)
are trusted. The job record keeps the request without its password.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from rag_ray.api.deps import admin_principal, get_services
from rag_ray.api.services import Services
from rag_ray.errors import InvalidInput
from rag_ray.sources.rdb.config import DatabaseConfig, check_remote_allowed
from rag_ray.sources.rdb.introspect import inspect_tables
from rag_ray.sources.rdb.reader import create_source_engine
from rag_ray.sources.rdb.state import get_source, list_sources
from rag_ray.sources.rdb.sync import RdbSyncRequest
from rag_ray.types import Acl, Principal

router = APIRouter(prefix="/extract/rdb", tags=["extract"])

EXAMPLE: Any = {"database_config": {"host": "localhost", "port": 5432, "database": "mydb", "user": "postgres",
                               "password": "password", "database_type": "postgresql"},
           "extraction_config": {"mode": "incremental", "batch_size": 1000,
                                 "include_tables": ["users", "orders", "products"],
                                 "incremental_column": "updated_at", "validate_data": True}}


class ExtractionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["full", "incremental"] = "full"
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    max_rows: int | None = Field(default=None, ge=1)
    include_tables: list[str] = Field(default_factory=list, max_length=1000)
    exclude_tables: list[str] = Field(default_factory=list, max_length=1000)
    incremental_column: str | None = Field(default=None, max_length=255)
    validate_data: bool = False


class AclBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner_id: str | None = Field(default=None, max_length=128, description="default: the caller")
    group_ids: list[str] = Field(default_factory=list, max_length=256)
    visibility: Literal["private", "group", "public"] = "private"


class ExtractRdbBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})
    database_config: DatabaseConfig | None = None
    source: str | None = Field(default=None, max_length=128, description="a named source instead of database_config")
    extraction_config: ExtractionConfig | None = None
    source_name: str = Field("", max_length=255, description="names the source in ids (default: the URL)")
    acl: AclBody | None = None


class InspectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    database_config: DatabaseConfig
    include_tables: list[str] = Field(default_factory=list, max_length=1000)
    row_counts: bool = True


def _request(body: ExtractRdbBody, services: Services, principal: Principal) -> RdbSyncRequest:
    if (body.database_config is None) == (body.source is None):
        raise InvalidInput("give exactly one of database_config and source", field="database_config")
    if body.source is not None:
        named = get_source(services.db, services.settings.jwt_secret(), body.source)
        return _override(RdbSyncRequest.from_source(named), body.extraction_config)
    assert body.database_config is not None
    check_remote_allowed(body.database_config, services.settings.rdb_allowed_hosts)
    acl_body = body.acl or AclBody()
    acl = Acl(acl_body.owner_id or principal.user_id, tuple(acl_body.group_ids), acl_body.visibility)
    request = RdbSyncRequest(database=body.database_config, source_name=body.source_name, acl=acl)
    return _override(request, body.extraction_config or ExtractionConfig())


def _override(request: RdbSyncRequest, config: ExtractionConfig | None) -> RdbSyncRequest:
    if config is not None:
        for name, value in config.model_dump().items():
            setattr(request, name, value)
    request.check()
    return request


@router.post("", status_code=202, summary="Sync database tables into the store (admin; returns a job id)")
def extract_rdb(body: ExtractRdbBody, principal: Principal = Depends(admin_principal),
                services: Services = Depends(get_services)) -> dict[str, Any]:
    request = _request(body, services, principal)
    job_id = services.rdb_jobs.submit(request, principal)
    return {"job_id": job_id, "status": "pending", "source": request.source}


@router.post("/inspect", summary="Tables, columns, keys and row counts of a database (admin)")
def inspect_rdb(body: InspectBody, _: Principal = Depends(admin_principal),
                services: Services = Depends(get_services)) -> dict[str, Any]:
    check_remote_allowed(body.database_config, services.settings.rdb_allowed_hosts)
    return _inspect(body.database_config, body.include_tables, body.row_counts)


@router.get("/inspect", summary="Schema of a named source (admin)")
def inspect_source(source: str, row_counts: bool = True, _: Principal = Depends(admin_principal),
                   services: Services = Depends(get_services)) -> dict[str, Any]:
    named = get_source(services.db, services.settings.jwt_secret(), source)
    return {"source": source, **_inspect(named.config, list(named.options.get("include_tables") or []), row_counts)}


@router.get("/sources", summary="Named database sources (URLs masked; admin)")
def rdb_sources(_: Principal = Depends(admin_principal), services: Services = Depends(get_services)) -> dict[str, Any]:
    found = list_sources(services.db, services.settings.jwt_secret())
    return {"sources": [s.to_dict() for s in found], "count": len(found)}


def _inspect(config: DatabaseConfig, include: list[str], row_counts: bool) -> dict[str, Any]:
    engine = create_source_engine(config)
    try:
        tables = inspect_tables(engine, schema=config.schema_name, include=include or None, row_counts=row_counts)
    finally:
        engine.dispose()
    return {"database": config.masked_url(), "tables": [t.to_dict() for t in tables]}
