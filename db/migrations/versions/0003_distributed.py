"""Distributed execution: concurrency slots and worker heartbeats.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from db.types import JSONType, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # When the run's last broker message was sent (NULL: at creation); the sweeper resends
    # a message for an unleased run whose last one is older than REDISPATCH_AFTER.
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("dispatched_at", UTCDateTime(), nullable=True))
    op.create_table(
        "flow_slots",
        sa.Column("flow", sa.String(100), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("flow", "run_id", name="pk_flow_slots"),
    )
    op.create_index("ix_flow_slots_owner", "flow_slots", ["owner"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(300), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("hostname", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", JSONType, nullable=False),
        sa.Column("running", JSONType, nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )
    op.create_index("ix_workers_expires_at", "workers", ["expires_at"])
    op.create_table(
        "locks",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("owner", sa.String(300), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_locks"),
    )


def downgrade() -> None:
    op.drop_table("locks")
    op.drop_index("ix_workers_expires_at", table_name="workers")
    op.drop_table("workers")
    op.drop_index("ix_flow_slots_owner", table_name="flow_slots")
    op.drop_table("flow_slots")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("dispatched_at")
