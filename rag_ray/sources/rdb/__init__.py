"""Relational database sources: connection config, introspection, dialect SQL, readers, row rendering,
validation and the sync driver (``RdbIngestor``)."""

from rag_ray.sources.rdb.config import DatabaseConfig, check_remote_allowed
from rag_ray.sources.rdb.introspect import ColumnInfo, TableInfo, inspect_tables
from rag_ray.sources.rdb.sync import RdbIngestor, RdbSyncRequest, RdbSyncSummary

__all__ = ["ColumnInfo", "DatabaseConfig", "RdbIngestor", "RdbSyncRequest", "RdbSyncSummary", "TableInfo",
           "check_remote_allowed", "inspect_tables"]
