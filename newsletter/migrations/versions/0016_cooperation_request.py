"""Cooperation requests: a reader's "connect me" (对接) on a demand item, and its follow-up.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cooperation_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issue_id", sa.Integer(), nullable=False),
        sa.Column("item_id", AutoString(length=80), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("mission", AutoString(length=60), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("organisation", AutoString(length=200), nullable=False),
        sa.Column("country", AutoString(length=100), nullable=False),
        sa.Column("state", AutoString(length=20), nullable=False),
        sa.Column("staff_note", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["issue_id"], ["issue.id"]),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscriber.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("issue_id", "item_id", "subscriber_id"),
    )
    op.create_index("ix_cooperation_request_issue_id", "cooperation_request", ["issue_id"])
    op.create_index(
        "ix_cooperation_request_subscriber_id", "cooperation_request", ["subscriber_id"]
    )
    op.create_index("ix_cooperation_request_mission", "cooperation_request", ["mission"])


def downgrade() -> None:
    op.drop_index("ix_cooperation_request_mission", table_name="cooperation_request")
    op.drop_index("ix_cooperation_request_subscriber_id", table_name="cooperation_request")
    op.drop_index("ix_cooperation_request_issue_id", table_name="cooperation_request")
    op.drop_table("cooperation_request")
