"""Bounded history: each run counts the bytes its steps keep; retention finds finished runs.

``runs.history_bytes`` is what a run's step rows hold (deltas and cursors), added to by
every checkpoint and read back at the claim, so MAX_HISTORY_BYTES holds across processes.
The retention job deletes finished runs past RETENTION_DAYS oldest first
(``ix_runs_finished_at``) with their idempotency keys (``ix_idempotency_keys_run_id``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(
            sa.Column("history_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.create_index(
        "ix_runs_finished_at",
        "runs",
        ["finished_at"],
        postgresql_where=sa.text("finished_at IS NOT NULL"),
        sqlite_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_index("ix_idempotency_keys_run_id", "idempotency_keys", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_run_id", table_name="idempotency_keys")
    op.drop_index("ix_runs_finished_at", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("history_bytes")
