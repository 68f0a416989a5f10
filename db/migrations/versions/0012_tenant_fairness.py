"""Tenant fairness: runs held back in the database for their tenant's turn, and the
per-tenant overrides of ``TENANT_CONCURRENCY``.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from db.types import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

IN_FLIGHT = "status IN ('queued', 'running') AND NOT held"
HELD = "held AND status = 'queued'"


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index(
        "ix_runs_in_flight",
        "runs",
        ["tenant"],
        postgresql_where=sa.text(IN_FLIGHT),
        sqlite_where=sa.text(IN_FLIGHT),
    )
    op.create_index(
        "ix_runs_held",
        "runs",
        ["tenant", sa.text("priority DESC"), "id"],
        postgresql_where=sa.text(HELD),
        sqlite_where=sa.text(HELD),
    )
    op.create_table(
        "tenant_limits",
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("tenant", name="pk_tenant_limits"),
    )


def downgrade() -> None:
    op.drop_table("tenant_limits")
    op.drop_index("ix_runs_held", table_name="runs")
    op.drop_index("ix_runs_in_flight", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("held")
