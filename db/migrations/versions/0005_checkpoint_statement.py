"""SQLite's checkpoint is a fenced UPDATE of the run and an INSERT of the step again.

The ``steps_checkpoint`` trigger of 0004 moved the run's step counter from the step's
INSERT, but could not renew the run's lease: a run advanced for longer than the lease TTL
could be taken over mid-run. The SQLite store now commits the UPDATE (which renews the
lease on the database's clock) and the INSERT in one transaction, so the trigger goes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TRIGGER = """
CREATE TRIGGER steps_checkpoint AFTER INSERT ON steps
WHEN NEW.cursor IS NOT NULL
BEGIN
    UPDATE runs
    SET seq = NEW.seq, cursor = NEW.cursor, current_node = NEW.next_node,
        version = version + 1, deliveries = 0
    WHERE id = NEW.run_id;
END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS steps_checkpoint")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(TRIGGER)
