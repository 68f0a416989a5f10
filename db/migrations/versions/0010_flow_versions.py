"""Flow versions side by side: a flow row per (name, version, graph hash), and when a
process last had it loaded.

``last_seen_at`` is refreshed by every process's supervisor (``RunStore.sync_flows``); a run
whose version no live process has had for ``FLOW_MISSING_GRACE`` seconds fails
``flow_changed``, until then processes that lack it leave it queued. Existing rows start as
seen when they were registered.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

from db.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flows") as batch:
        batch.add_column(sa.Column("last_seen_at", UTCDateTime(), nullable=True))
    op.execute("UPDATE flows SET last_seen_at = registered_at")
    with op.batch_alter_table("flows") as batch:
        batch.alter_column("last_seen_at", existing_type=UTCDateTime(), nullable=False)
        batch.drop_constraint("pk_flows", type_="primary")
        batch.create_primary_key("pk_flows", ["name", "version", "graph_hash"])


def downgrade() -> None:
    # The rows are a cache every process writes again at start; two graphs of one
    # (name, version) can't share the old key, so they go.
    op.execute("DELETE FROM flows")
    with op.batch_alter_table("flows") as batch:
        batch.drop_constraint("pk_flows", type_="primary")
        batch.create_primary_key("pk_flows", ["name", "version"])
        batch.drop_column("last_seen_at")
