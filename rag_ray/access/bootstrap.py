"""The first admin: from RAG_ADMIN_USERNAME / RAG_ADMIN_PASSWORD, or with a generated password."""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import select

from rag_ray.access.users import create_user
from rag_ray.config import Settings
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import User

log = logging.getLogger(__name__)


def bootstrap_admin(settings: Settings, db: MetadataDB) -> str | None:
    """Create the first admin when there is none; return a generated password for the caller to print once.

    Returns None when an admin already exists or the password came from the configuration. The password
    is never logged.
    """
    with db.session() as s:
        if s.scalar(select(User.user_id).where(User.role == "admin").limit(1)) is not None:
            return None
        if s.scalar(select(User.user_id).where(User.username == settings.admin_username)) is not None:
            log.warning("no admin exists, but user %r does and is not one; not bootstrapping",
                        settings.admin_username)
            return None
    configured = settings.admin_password.get_secret_value() if settings.admin_password else ""
    password = configured or secrets.token_urlsafe(18)
    create_user(db, settings.admin_username, password, role="admin")
    log.info("created the first admin user %r", settings.admin_username)
    return None if configured else password
