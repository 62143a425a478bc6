"""Alembic environment: rag-ray runs migrations programmatically with a live connection."""

from alembic import context

from rag_ray.metadata.models import Base

connection = context.config.attributes.get("connection")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
