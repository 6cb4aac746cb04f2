"""Campaign requests and their four-eyes sign-off (签发), bound to the issue's content hash.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issue_id", sa.Integer(), nullable=False),
        sa.Column("issue_hash", AutoString(length=64), nullable=False),
        sa.Column("schedule", sa.JSON(), nullable=False),
        sa.Column("state", AutoString(length=20), nullable=False),
        sa.Column("requested_by", AutoString(length=340), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("decided_by", AutoString(length=340), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("override", sa.Text(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["issue_id"], ["issue.id"]),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_campaign_request_issue_id", "campaign_request", ["issue_id"])


def downgrade() -> None:
    op.drop_index("ix_campaign_request_issue_id", table_name="campaign_request")
    op.drop_table("campaign_request")
