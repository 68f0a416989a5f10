"""Durable control: runs that wait for a person, sleep, pause, are retried or replayed.

``waiting_for`` is what a waiting run asks for; ``wake_at`` is when a sleeping run wakes
or a waiting run's wait times out, found by the sweeper through ``ix_runs_status_wake_at``
(only runs with a wake-up time are in it, and the sweeper asks for one status at a time, so
its cost follows the runs that are due, not the runs that wait). ``pause_requested``
stops a running run at its next checkpoint.
``trigger`` says who started a run, ``parent_run_id``/``parent_seq`` where a replay came
from, and ``retries`` how often an operator carried a failed run on.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from db.types import JSONType, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TIMERS = "wake_at IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("waiting_for", JSONType, nullable=True))
        batch.add_column(sa.Column("wake_at", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("pause_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("trigger", JSONType, nullable=True))
        batch.add_column(sa.Column("parent_run_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("parent_seq", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
    op.create_index(
        "ix_runs_status_wake_at",
        "runs",
        ["status", "wake_at"],
        postgresql_where=sa.text(TIMERS),
        sqlite_where=sa.text(TIMERS),
    )
    op.create_index("ix_runs_parent_run_id", "runs", ["parent_run_id"])


def downgrade() -> None:
    op.drop_index("ix_runs_parent_run_id", table_name="runs")
    op.drop_index("ix_runs_status_wake_at", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        for column in (
            "retries",
            "parent_seq",
            "parent_run_id",
            "trigger",
            "pause_requested",
            "wake_at",
            "waiting_for",
        ):
            batch.drop_column(column)
