"""Scheduling: planned sends per time zone, recurring digests, items received, APScheduler jobs.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_text = AutoString
_when = UTCDateTime


def upgrade() -> None:
    op.create_table(
        "schedule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("timezone", _text(length=64), nullable=False),
        sa.Column("local_date", sa.Date(), nullable=True),
        sa.Column("local_time", _text(length=5), nullable=False),
        sa.Column("fire_at", _when(), nullable=False),
        sa.Column("not_after", _when(), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason", _text(), nullable=False),
        sa.Column("created_at", _when(), nullable=False),
        sa.Column("fired_at", _when(), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_schedule_campaign_id", "schedule", ["campaign_id"])
    op.create_index("ix_schedule_state", "schedule", ["state"])
    op.create_table(
        "schedule_delivery",
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["delivery.id"]),
        sa.ForeignKeyConstraint(["plan_id"], ["schedule.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("plan_id", "delivery_id"),
    )
    op.create_index("ix_schedule_delivery_delivery_id", "schedule_delivery", ["delivery_id"])
    op.create_table(
        "digest_schedule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cron", _text(length=120), nullable=False),
        sa.Column("local", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("created_at", _when(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "digest_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest_id", sa.Integer(), nullable=False),
        sa.Column("timezone", _text(length=64), nullable=False),
        sa.Column("state", _text(length=20), nullable=False),
        sa.Column("scheduled_for", _when(), nullable=True),
        sa.Column("ran_at", _when(), nullable=False),
        sa.Column("issues", sa.Integer(), nullable=False),
        sa.Column("enqueued", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["digest_id"], ["digest_schedule.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_digest_run_digest_id", "digest_run", ["digest_id"])
    op.create_table(
        "received_item",
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("received_at", _when(), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["delivery.id"]),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscriber.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("subscriber_id", "item_id"),
    )
    op.create_index("ix_received_item_delivery_id", "received_item", ["delivery_id"])
    # APScheduler 3's SQLAlchemyJobStore table, exactly as it would create it itself, so the
    # schema of the application database stays under Alembic.
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(191), nullable=False),
        sa.Column("next_run_time", sa.Float(25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_apscheduler_jobs_next_run_time", "apscheduler_jobs", ["next_run_time"])


def downgrade() -> None:
    op.drop_table("apscheduler_jobs")
    op.drop_table("received_item")
    op.drop_table("digest_run")
    op.drop_table("digest_schedule")
    op.drop_table("schedule_delivery")
    op.drop_table("schedule")
