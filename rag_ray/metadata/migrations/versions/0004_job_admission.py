"""job admission: heartbeats and deadlines on jobs, the admission lock row

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    # one row; admission transactions update it first, so they run one at a time on every backend
    lock = op.create_table(
        "job_admission",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("admissions", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(lock, [{"id": 1, "admissions": 0}])


def downgrade() -> None:
    op.drop_table("job_admission")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("deadline_at")
        batch.drop_column("heartbeat_at")
