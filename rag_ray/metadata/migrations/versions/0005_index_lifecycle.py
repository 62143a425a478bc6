"""index lifecycle: the collections behind the RAG_COLLECTION alias and what each one reflects

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "index_collections",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("alias", sa.String(255), nullable=False, index=True),
        sa.Column("embedding_model", sa.String(255), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("chunk_size", sa.Integer, nullable=True),
        sa.Column("chunk_overlap", sa.Integer, nullable=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("previous", sa.String(255), nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("switched_at", sa.DateTime(timezone=True), nullable=True),
    )
    # per collection that is not live: the fingerprint of each document's live chunks it was last synced from
    op.create_table(
        "index_doc_states",
        sa.Column("collection", sa.String(255), primary_key=True),
        sa.Column("doc_id", sa.String(64), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("index_doc_states")
    op.drop_table("index_collections")
