"""Why a ledger row was skipped, in its own column: taking back what a missed or cancelled plan
skipped no longer depends on the reply text.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The reply each reason wrote before this column existed (spelt out: a migration must not
# change when the code's texts do).
_BY_REPLY = {
    "missed: send window closed": "missed_window",
    "schedule cancelled": "plan_cancelled",
    "campaign cancelled": "campaign_cancelled",
    "subscriber no longer active": "not_active",
}


def upgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("skip_reason", sa.String(length=30), nullable=True))
    delivery = sa.table(
        "delivery",
        sa.column("state", sa.String()),
        sa.column("reply", sa.String()),
        sa.column("skip_reason", sa.String()),
    )
    # A skipped row with any other reply keeps no reason: nothing takes it back (never twice).
    for reply, reason in _BY_REPLY.items():
        op.execute(
            delivery.update()
            .where(delivery.c.state == "skipped", delivery.c.reply == reply)
            .values(skip_reason=reason)
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_column("skip_reason")
