"""Each step row keeps the cursor after it; on SQLite a trigger applies it to the run.

With the cursor on the step, a checkpoint is one INSERT: on SQLite the trigger moves the
run's step counter, cursor and current node in the same statement, so the common
checkpoint costs one statement instead of two (PostgreSQL already does both in one
statement with data-modifying CTEs). The cursor per step is also where a retry starts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from db.types import JSONType

revision = "0004"
down_revision = "0003"
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
    with op.batch_alter_table("steps") as batch:
        batch.add_column(sa.Column("cursor", JSONType, nullable=True))
        batch.add_column(sa.Column("next_node", sa.String(500), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS steps_checkpoint")
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("next_node")
        batch.drop_column("cursor")
