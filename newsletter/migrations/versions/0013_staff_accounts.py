"""Staff accounts for the console: users, their grants (role x mission) and server-side sessions.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staff_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", AutoString(length=320), nullable=False),
        sa.Column("name", AutoString(), nullable=False),
        sa.Column("locale", AutoString(length=10), nullable=False),
        sa.Column("password_hash", AutoString(length=200), nullable=False),
        sa.Column("totp_secret", AutoString(length=200), nullable=False),
        sa.Column("totp_step", sa.Integer(), nullable=False),
        sa.Column("recovery_codes", sa.JSON(), nullable=False),
        sa.Column("status", AutoString(length=20), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("last_login_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "staff_grant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("role", AutoString(length=20), nullable=False),
        sa.Column("mission", AutoString(length=60), nullable=False),
        sa.ForeignKeyConstraint(["staff_id"], ["staff_user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("staff_id", "role", "mission"),
    )
    op.create_index("ix_staff_grant_staff_id", "staff_grant", ["staff_id"])
    op.create_table(
        "staff_session",
        sa.Column("id", AutoString(length=64), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("mfa_at", UTCDateTime(), nullable=True),
        sa.Column("ip", AutoString(length=45), nullable=False),
        sa.Column("user_agent", AutoString(length=300), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["staff_id"], ["staff_user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_staff_session_staff_id", "staff_session", ["staff_id"])


def downgrade() -> None:
    op.drop_index("ix_staff_session_staff_id", table_name="staff_session")
    op.drop_table("staff_session")
    op.drop_index("ix_staff_grant_staff_id", table_name="staff_grant")
    op.drop_table("staff_grant")
    op.drop_table("staff_user")
