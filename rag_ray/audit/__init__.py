"""The audit log: security-relevant events, append-only, in the metadata DB. Importing this package installs the
ORM hooks (``rag_ray.audit.orm``) that audit identity and document-permission changes in every process."""

from rag_ray.audit import orm
from rag_ray.audit.context import Actor, acting_as, bind_actor, cli_actor, current_actor
from rag_ray.audit.log import ACTIONS, DENIED, FAILURE, SUCCESS, AuditEntry, AuditLog, clean_details

orm.install()

__all__ = ["ACTIONS", "DENIED", "FAILURE", "SUCCESS", "Actor", "AuditEntry", "AuditLog", "acting_as", "bind_actor",
           "clean_details", "cli_actor", "current_actor"]
