"""Campaigns name the transport that sent them, and a rehearsal (file or null on an smtp
instance) is marked so that no real send, digest or worker takes it for a delivery.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it): a batch copy would drop `campaign`, which the ledger's
    # foreign keys forbid. Campaigns sent before went through a transport nobody recorded.
    op.add_column(
        "campaign",
        sa.Column("transport", sa.String(length=10), nullable=False, server_default=""),
    )
    op.add_column(
        "campaign",
        sa.Column("rehearsal", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_column("rehearsal")
        batch_op.drop_column("transport")
