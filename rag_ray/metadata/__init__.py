from rag_ray.metadata.db import MetadataDB, make_engine, upgrade_schema
from rag_ray.metadata.models import Base, DocumentRecord, JobAdmission, JobErrorRecord, JobRecord

__all__ = ["Base", "DocumentRecord", "JobAdmission", "JobErrorRecord", "JobRecord", "MetadataDB", "make_engine",
           "upgrade_schema"]
