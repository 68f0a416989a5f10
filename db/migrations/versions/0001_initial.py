"""Initial schema: flows, runs, steps, idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from db.types import JSONType, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UNFINISHED = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("graph_hash", sa.String(64), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_flows"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("flow", sa.String(100), nullable=False),
        sa.Column("flow_version", sa.String(100), nullable=False),
        sa.Column("graph_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("input", JSONType, nullable=False),
        sa.Column("output", JSONType, nullable=True),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("metadata", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("deadline_at", UTCDateTime(), nullable=True),
        sa.Column("current_node", sa.String(500), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("cursor", JSONType, nullable=True),
        sa.Column("state", JSONType, nullable=True),
        sa.Column("state_seq", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_tenant_id", "runs", ["tenant", "id"])
    op.create_index("ix_runs_tenant_flow_id", "runs", ["tenant", "flow", "id"])
    op.create_index("ix_runs_tenant_status_id", "runs", ["tenant", "status", "id"])
    op.create_index(
        "ix_runs_unfinished",
        "runs",
        ["status", "lease_expires_at"],
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )
    op.create_table(
        "steps",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(500), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(200), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("delta", JSONType, nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_steps_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_steps"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("flow", sa.String(100), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "flow", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("steps")
    op.drop_index("ix_runs_unfinished", table_name="runs")
    op.drop_index("ix_runs_tenant_status_id", table_name="runs")
    op.drop_index("ix_runs_tenant_flow_id", table_name="runs")
    op.drop_index("ix_runs_tenant_id", table_name="runs")
    op.drop_table("runs")
    op.drop_table("flows")
