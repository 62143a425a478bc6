"""`POST /extract/rdb` (admin): sync a relational database into Milvus as a background job; schema
introspection and named sources.

Connections submitted over HTTP must name an allow-listed ``host[:port]`` (``RAG_RDB_ALLOWED_HOSTS``) and
cannot be SQLite files: the host is resolved once, every address checked, and the connection pinned to the
checked one. Their URL parameters are an allowlist (no host/port overrides, sockets or file options), as for
named sources (registered by an operator with `rag-cli rdb sources add`, which skip the host allowlist). A
database type without its driver installed is a 422 naming ``database_type``. The job record keeps the
request without its password.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from rag_ray.api.deps import AdminDep, ServicesDep
from rag_ray.api.services import Services
from rag_ray.errors import InvalidInput
from rag_ray.ingest.rdb_sync import RdbSyncRequest
from rag_ray.sources.rdb.config import DatabaseConfig, admit_remote, require_driver
from rag_ray.sources.rdb.introspect import inspect_tables
from rag_ray.sources.rdb.network import Resolver, system_resolver
from rag_ray.sources.rdb.reader import create_source_engine
from rag_ray.sources.rdb.state import NamedSource, get_source, list_sources
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
    owner_column: str | None = Field(default=None, max_length=255,
                                     description="a row's owner (user id or username): its chunks are its owner's")
    group_column: str | None = Field(default=None, max_length=255,
                                     description="a row's groups (ids or names, comma separated)")


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


def host_resolver() -> Resolver:
    """How database host names are resolved: a dependency, so a test can answer for DNS."""
    return system_resolver


ResolverDep = Annotated[Resolver, Depends(host_resolver)]


def _remote(config: DatabaseConfig, services: Services, resolve: Resolver) -> DatabaseConfig:
    """A submitted connection: admitted (driver installed, resolved address allow-listed and pinned), and
    bounded by the connect timeout."""
    settings = services.settings
    admitted = admit_remote(config, settings.rdb_allowed_hosts, resolve)
    return admitted.with_connect_timeout(settings.rdb_connect_timeout_s)


def _named(services: Services, name: str) -> NamedSource:
    """A named source with its driver checked and the connect timeout set (its host is operator-trusted)."""
    named = get_source(services.db, services.settings.jwt_secret(), name)
    require_driver(named.config.kind)
    named.config = named.config.with_connect_timeout(services.settings.rdb_connect_timeout_s)
    return named


def _request(body: ExtractRdbBody, services: Services, principal: Principal, resolve: Resolver) -> RdbSyncRequest:
    if (body.database_config is None) == (body.source is None):
        raise InvalidInput("give exactly one of database_config and source", field="database_config")
    if body.source is not None:
        return _override(RdbSyncRequest.from_source(_named(services, body.source)), body.extraction_config)
    assert body.database_config is not None
    database = _remote(body.database_config, services, resolve)
    acl_body = body.acl or AclBody()
    acl = Acl(acl_body.owner_id or principal.user_id, tuple(acl_body.group_ids), acl_body.visibility)
    request = RdbSyncRequest(database=database, source_name=body.source_name, acl=acl)
    return _override(request, body.extraction_config or ExtractionConfig())


def _override(request: RdbSyncRequest, config: ExtractionConfig | None) -> RdbSyncRequest:
    if config is not None:
        for name, value in config.model_dump().items():
            setattr(request, name, value)
    request.check()
    return request


@router.post("", status_code=202, summary="Sync database tables into the store (admin; returns a job id)")
def extract_rdb(body: ExtractRdbBody, principal: AdminDep, services: ServicesDep, resolve: ResolverDep
                ) -> dict[str, Any]:
    request = _request(body, services, principal, resolve)
    job_id = services.rdb_jobs.submit(request, principal)
    return {"job_id": job_id, "status": services.jobs.get(job_id, with_errors=False).status, "source": request.source}


@router.post("/inspect", summary="Tables, columns, keys and row counts of a database (admin)")
def inspect_rdb(body: InspectBody, _: AdminDep, services: ServicesDep, resolve: ResolverDep) -> dict[str, Any]:
    return _inspect(_remote(body.database_config, services, resolve), body.include_tables, body.row_counts)


@router.get("/inspect", summary="Schema of a named source (admin)")
def inspect_source(source: str, _: AdminDep, services: ServicesDep, row_counts: bool = True) -> dict[str, Any]:
    named = _named(services, source)
    return {"source": source, **_inspect(named.config, list(named.options.get("include_tables") or []), row_counts)}


@router.get("/sources", summary="Named database sources (URLs masked; admin)")
def rdb_sources(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    found = list_sources(services.db, services.settings.jwt_secret())
    return {"sources": [s.to_dict() for s in found], "count": len(found)}


def _inspect(config: DatabaseConfig, include: list[str], row_counts: bool) -> dict[str, Any]:
    engine = create_source_engine(config)
    try:
        tables = inspect_tables(engine, schema=config.schema_name, include=include or None, row_counts=row_counts)
    finally:
        engine.dispose()
    return {"database": config.masked_url(), "tables": [t.to_dict() for t in tables]}
