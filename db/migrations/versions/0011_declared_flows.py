"""Declarative flows posted to ``POST /v1/flows``, which every process loads.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

from db.types import JSONType, UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "declared_flows",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("document", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_declared_flows"),
    )
    op.create_index("ix_declared_flows_created_at", "declared_flows", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_declared_flows_created_at", table_name="declared_flows")
    op.drop_table("declared_flows")
