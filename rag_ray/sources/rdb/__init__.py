"""Relational database sources: connection config, introspection, dialect SQL, readers, row rendering,
validation. The sync driver (``RdbIngestor``) is ingestion: ``rag_ray.ingest.rdb_sync``."""

from rag_ray.sources.rdb.config import DatabaseConfig, check_remote_allowed
from rag_ray.sources.rdb.introspect import ColumnInfo, TableInfo, inspect_tables

__all__ = ["ColumnInfo", "DatabaseConfig", "TableInfo", "check_remote_allowed", "inspect_tables"]
