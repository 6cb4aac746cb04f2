"""Subscribe-form limits in the database, so every web process counts the same hits.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_rate_limit",
        sa.Column("scope", AutoString(length=16), nullable=False),
        sa.Column("key", AutoString(length=64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", "slot"),
    )
    op.create_index("ix_web_rate_limit_slot", "web_rate_limit", ["slot"])


def downgrade() -> None:
    op.drop_index("ix_web_rate_limit_slot", table_name="web_rate_limit")
    op.drop_table("web_rate_limit")
