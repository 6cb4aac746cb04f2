"""Subscribers' delivery modes: every issue, a weekly or monthly digest, or paused until a date.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Everyone stored before received every issue.
    with op.batch_alter_table("subscriber", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("delivery_mode", AutoString(length=10), nullable=False, server_default="each")
        )
        batch_op.add_column(sa.Column("mode_weekday", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("paused_until", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriber", schema=None) as batch_op:
        batch_op.drop_column("paused_until")
        batch_op.drop_column("mode_weekday")
        batch_op.drop_column("delivery_mode")
