"""Delivery ledger: an index in claim order (campaign, profile, id).

Claims take due rows grouped by profile; without this index each claim sorted every waiting row
of the campaign, which grows with the list.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_delivery_claim_order", "delivery", ["campaign_id", "profile", "id"])


def downgrade() -> None:
    op.drop_index("ix_delivery_claim_order", table_name="delivery")
