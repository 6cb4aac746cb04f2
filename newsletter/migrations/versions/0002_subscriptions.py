"""Subscription management: no schema change (the tables it needs came with 0001).

Subscriber.token_key, SubscriberSector, AuditEvent and Suppression already hold everything:
an erased subscriber keeps its row (the delivery ledger points at it) under a reserved
`erased-<id>@invalid` address, and rate limits live in memory. Revision 0003 chains after this.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
