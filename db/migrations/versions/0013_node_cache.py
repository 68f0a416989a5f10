"""Node result caching: the cached exec results, and which steps were served from them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from db.types import JSONType, UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.add_column(
            sa.Column("cached", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "node_cache",
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("flow", sa.String(100), nullable=False),
        sa.Column("node", sa.String(500), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", JSONType, nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "flow", "node", "key", name="pk_node_cache"),
    )
    op.create_index("ix_node_cache_expires_at", "node_cache", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_node_cache_expires_at", table_name="node_cache")
    op.drop_table("node_cache")
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("cached")
