"""Steps keep the output their node streamed (``core.context.emit``).

``steps.output`` holds the stream events of the attempt sequence that committed: each
chunk and each reset (a retry) with its event number, so a finished run's event stream
replays exactly what subscribers saw live.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from db.types import JSONType

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.add_column(sa.Column("output", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("output")
