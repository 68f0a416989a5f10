"""Idempotency keys belong to the principal that used them, not to its whole tenant.

Two consumers of one tenant may pick the same key: each now gets its own run instead of
one replaying (or being refused by) the other's. Keys already stored take the principal
of the run they name.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

FILL = """
UPDATE idempotency_keys SET principal = COALESCE(
    (SELECT runs.principal FROM runs WHERE runs.id = idempotency_keys.run_id), ''
)
"""


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("principal", sa.String(200), nullable=False, server_default=""))
    op.execute(FILL)
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_constraint("pk_idempotency_keys", type_="primary")
        batch.create_primary_key("pk_idempotency_keys", ["tenant", "principal", "flow", "key"])


def downgrade() -> None:
    # Keys of one tenant that differ only by principal can't share the old key: keep one.
    op.execute(
        """
        DELETE FROM idempotency_keys WHERE EXISTS (
            SELECT 1 FROM idempotency_keys AS other
            WHERE other.tenant = idempotency_keys.tenant AND other.flow = idempotency_keys.flow
              AND other.key = idempotency_keys.key
              AND other.principal < idempotency_keys.principal
        )
        """
    )
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_constraint("pk_idempotency_keys", type_="primary")
        batch.create_primary_key("pk_idempotency_keys", ["tenant", "flow", "key"])
        batch.drop_column("principal")
