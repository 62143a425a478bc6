"""rdb sync: per source+table watermarks and named database sources

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rdb_sync_state",
        sa.Column("source_name", sa.String(255), primary_key=True),
        sa.Column("table_name", sa.String(255), primary_key=True),
        sa.Column("watermark_column", sa.String(255), nullable=False),
        sa.Column("watermark", sa.Text, nullable=True),
        sa.Column("last_mode", sa.String(16), nullable=False),
        sa.Column("last_job_id", sa.String(64), nullable=True),
        sa.Column("rows_synced", sa.Integer, nullable=False),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "rdb_sources",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("database_type", sa.String(32), nullable=False),
        sa.Column("url_masked", sa.String(2048), nullable=False),
        sa.Column("url_encrypted", sa.Text, nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("refresh_interval_s", sa.Integer, nullable=True),
        sa.Column("owner_id", sa.String(128), nullable=False),
        sa.Column("group_ids", sa.JSON, nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("last_job_id", sa.String(64), nullable=True),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rdb_sources")
    op.drop_table("rdb_sync_state")
