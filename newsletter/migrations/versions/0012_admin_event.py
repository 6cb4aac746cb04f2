"""The audit chain: `admin_event`, append-only, each row carrying the hash of the one before.

The chain starts empty here: subscriber history from before it stays in `auditevent` (the
subscriber's timeline, which an erasure may scrub), and `audit verify` starts at the first
chained event. Triggers refuse UPDATE and DELETE, so only someone who drops them can change a
row, and `audit verify` still shows it.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_PG_FUNCTION = """
CREATE FUNCTION admin_event_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'admin_event is append-only';
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "admin_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor_kind", AutoString(length=20), nullable=False),
        sa.Column("actor_id", AutoString(length=320), nullable=False),
        sa.Column("via", AutoString(length=20), nullable=False),
        sa.Column("action", AutoString(length=60), nullable=False),
        sa.Column("target", AutoString(length=340), nullable=False),
        sa.Column("mission", AutoString(length=60), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("ip", AutoString(length=45), nullable=False),
        sa.Column("prev_hash", AutoString(length=64), nullable=False),
        sa.Column("hash", AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_admin_event_action_at", "admin_event", ["action", "at"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER admin_event_append_only BEFORE UPDATE OR DELETE ON admin_event "
            "FOR EACH ROW EXECUTE FUNCTION admin_event_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER admin_event_no_{verb.lower()} BEFORE {verb} ON admin_event "
                "BEGIN SELECT RAISE(ABORT, 'admin_event is append-only'); END"
            )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS admin_event_append_only ON admin_event")
        op.execute("DROP FUNCTION IF EXISTS admin_event_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS admin_event_no_update")
        op.execute("DROP TRIGGER IF EXISTS admin_event_no_delete")
    op.drop_index("ix_admin_event_action_at", table_name="admin_event")
    op.drop_table("admin_event")
