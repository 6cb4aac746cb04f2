"""Delivery ledger: one index (campaign, state, profile, id) for claims and counts by state.

A claim asks for one state at a time in profile order; the index in (campaign, profile, id)
order made it walk past every row already sent, so each claim cost more as a campaign went
out (1.4 s per claim at 95 % of a million rows). Its prefix (campaign, state) serves the
counts the old `ix_delivery_campaign_state` served, so both old indexes go.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_delivery_claim", "delivery", ["campaign_id", "state", "profile", "id"])
    op.drop_index("ix_delivery_claim_order", table_name="delivery")
    op.drop_index("ix_delivery_campaign_state", table_name="delivery")


def downgrade() -> None:
    op.create_index("ix_delivery_campaign_state", "delivery", ["campaign_id", "state"])
    op.create_index("ix_delivery_claim_order", "delivery", ["campaign_id", "profile", "id"])
    op.drop_index("ix_delivery_claim", table_name="delivery")
