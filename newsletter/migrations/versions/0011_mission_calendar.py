"""Mission closures staff record, why a planned send fires later than the date asked for, and
digests that keep to each mission's working days.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mission_closure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("embassy_code", AutoString(length=60), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("reason", AutoString(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["embassy_code"], ["embassy.code"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_mission_closure_embassy_code", "mission_closure", ["embassy_code"])
    # Plans made before this column existed were never moved for a holiday.
    with op.batch_alter_table("schedule", schema=None) as batch_op:
        batch_op.add_column(sa.Column("moved", AutoString(), nullable=False, server_default=""))
    with op.batch_alter_table("digest_schedule", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("working_days", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("digest_schedule", schema=None) as batch_op:
        batch_op.drop_column("working_days")
    with op.batch_alter_table("schedule", schema=None) as batch_op:
        batch_op.drop_column("moved")
    op.drop_index("ix_mission_closure_embassy_code", table_name="mission_closure")
    op.drop_table("mission_closure")
