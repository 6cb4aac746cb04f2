"""SQLModel tables: reference data, subscribers, issues, campaigns and the delivery ledger."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Column, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

# The states live in `newsletter.states` (pure); they are named here too for the tables' users.
from newsletter.states import (
    CampaignState,
    DeliveryState,
    DigestState,
    PlanState,
    SkipReason,
    SubscriberStatus,
)

__all__ = [
    "AdminEvent", "AuditEvent", "Campaign", "CampaignState", "Delivery", "DeliveryState", "DigestRun",
    "DigestSchedule", "DigestState", "Embassy", "IssueRecord", "ItemRecord", "PlanState",
    "ReceivedItem", "ScheduleDelivery", "SchedulePlan", "Sector", "SkipReason", "StaffGrant",
    "StaffSession", "StaffUser", "Subscriber", "SubscriberSector", "SubscriberStatus",
    "Suppression", "WebRateLimit", "utcnow",
]  # fmt: skip


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _json(**kwargs: Any) -> Any:
    return Field(default_factory=list, sa_column=Column(JSON, nullable=False), **kwargs)


class Sector(SQLModel, table=True):
    code: str = Field(primary_key=True, max_length=60)
    name_zh: str
    name_en: str
    keywords: list[str] = _json()
    position: int = 0


class Embassy(SQLModel, table=True):
    code: str = Field(primary_key=True, max_length=60)
    kind: str = "embassy"
    name_zh: str
    name_en: str
    country: str = Field(max_length=2)
    city: str
    timezone: str
    working_week: str = "mon-fri"
    regions: list[str] = _json()
    default_sectors: list[str] = _json()


class Subscriber(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, max_length=320)
    name: str = ""
    title: str = ""
    embassy_code: str = Field(foreign_key="embassy.code", index=True)
    language: str = "zh"
    status: SubscriberStatus = Field(
        default=SubscriberStatus.PENDING, index=True, sa_type=String(20)
    )
    # Random key that signed links are bound to, so a link names no database id.
    token_key: str = Field(unique=True, max_length=64)
    consent_source: str = ""
    created_at: dt.datetime = Field(default_factory=utcnow)
    confirmed_at: dt.datetime | None = None
    status_changed_at: dt.datetime = Field(default_factory=utcnow)
    # How issues reach them (scheduling.cadence): each, weekly or monthly on an ISO weekday;
    # nothing at all before `paused_until` (leave).
    delivery_mode: str = Field(default="each", max_length=10)
    mode_weekday: int | None = None
    paused_until: dt.date | None = None


class SubscriberSector(SQLModel, table=True):
    subscriber_id: int = Field(foreign_key="subscriber.id", primary_key=True, ondelete="CASCADE")
    sector_code: str = Field(foreign_key="sector.code", primary_key=True)


class IssueRecord(SQLModel, table=True):
    __tablename__ = "issue"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True, max_length=80)
    publication: str
    title_en: str = ""
    year: int
    number: int
    date: dt.date | None = None
    source_yaml: str = Field(sa_column=Column(Text, nullable=False))
    imported_at: dt.datetime = Field(default_factory=utcnow)


class ItemRecord(SQLModel, table=True):
    __tablename__ = "item"
    __table_args__ = (UniqueConstraint("issue_id", "item_id"),)

    id: int | None = Field(default=None, primary_key=True)
    issue_id: int = Field(foreign_key="issue.id", index=True, ondelete="CASCADE")
    position: int
    item_id: str = Field(max_length=80)
    section: str = Field(max_length=20)
    title: str
    sectors: list[str] = _json()
    regions: list[str] = _json()
    always: bool = False


class Campaign(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    issue_id: int = Field(foreign_key="issue.id", index=True)
    state: CampaignState = Field(default=CampaignState.READY, sa_type=String(20))
    reason: str = ""
    created_at: dt.datetime = Field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    # The transport that last sent it (file, smtp, null), named when nothing is left to send.
    transport: str = Field(default="", max_length=10)
    # A send through file or null on an instance that really sends by smtp: its rows are no
    # delivery, so no real send, digest or worker ever takes this campaign up.
    rehearsal: bool = False


class Delivery(SQLModel, table=True):
    """One row of the ledger: one issue for one subscriber, at most once."""

    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id"),
        # Claims walk one state in profile order; counts by state use its prefix.
        Index("ix_delivery_claim", "campaign_id", "state", "profile", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True)
    state: DeliveryState = Field(default=DeliveryState.QUEUED, sa_type=String(20))
    attempts: int = 0
    profile: str = Field(default="", max_length=40)
    message_id: str = Field(default="", max_length=200)
    reply: str = ""
    # Why a `skipped` row was skipped (None otherwise): what may be taken back is read from
    # here, never from the reply, which is for people.
    skip_reason: SkipReason | None = Field(default=None, sa_type=String(30))
    next_attempt_at: dt.datetime | None = None
    first_attempt_at: dt.datetime | None = None
    # The send window: a scheduled row waits for not_before; past not_after it was missed.
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    # Which worker holds the row while `sending`, and until when its claim stands.
    worker: str = Field(default="", max_length=120)
    lease_until: dt.datetime | None = None
    updated_at: dt.datetime = Field(default_factory=utcnow)
    sent_at: dt.datetime | None = None


class AuditEvent(SQLModel, table=True):
    """Who or what changed a subscriber, when and from where."""

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int | None = Field(default=None, index=True)
    action: str = Field(max_length=40)
    old_status: str = ""
    new_status: str = ""
    actor: str = ""  # staff user, "subscriber", "import", "bounce"
    via: str = ""  # cli, link, web, import, bounce, api
    detail: str = ""
    at: dt.datetime = Field(default_factory=utcnow)


class Suppression(SQLModel, table=True):
    """An erased or blocked address, kept only as a keyed hash."""

    email_hash: str = Field(primary_key=True, max_length=64)
    reason: str = ""
    at: dt.datetime = Field(default_factory=utcnow)


class SchedulePlan(SQLModel, table=True):
    """One scheduled send: the rows of a campaign due at one instant (one time zone, one date)."""

    __tablename__ = "schedule"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    # IANA name, or "UTC+08:00" for a send given as one absolute time (`--at`).
    timezone: str = Field(max_length=64)
    local_date: dt.date | None = None
    local_time: str = Field(default="", max_length=5)
    fire_at: dt.datetime
    not_after: dt.datetime
    recipients: int = 0
    state: PlanState = Field(default=PlanState.PLANNED, index=True, sa_type=String(20))
    reason: str = ""
    # Why it fires later than the date asked for (holidays, closures, weekend); "" if it does not.
    moved: str = ""
    created_at: dt.datetime = Field(default_factory=utcnow)
    fired_at: dt.datetime | None = None


class ScheduleDelivery(SQLModel, table=True):
    """Which ledger rows a plan sends; a row may belong to several plans over time."""

    __tablename__ = "schedule_delivery"

    plan_id: int = Field(foreign_key="schedule.id", primary_key=True, ondelete="CASCADE")
    delivery_id: int = Field(foreign_key="delivery.id", primary_key=True, index=True)


class DigestSchedule(SQLModel, table=True):
    """A recurring digest: a crontab read in UTC, or in each mission's local time."""

    __tablename__ = "digest_schedule"

    id: int | None = Field(default=None, primary_key=True)
    cron: str = Field(max_length=120)
    local: bool = False
    # Rows of a mission closed on a run's day wait for its next working morning.
    working_days: bool = False
    state: DigestState = Field(default=DigestState.ACTIVE, sa_type=String(20))
    created_at: dt.datetime = Field(default_factory=utcnow)


class DigestRun(SQLModel, table=True):
    """One run (or one missed run) of a digest job, for one time zone ("" when read in UTC)."""

    __tablename__ = "digest_run"

    id: int | None = Field(default=None, primary_key=True)
    digest_id: int = Field(foreign_key="digest_schedule.id", index=True, ondelete="CASCADE")
    timezone: str = Field(default="", max_length=64)
    state: str = Field(default="ran", max_length=20)  # ran | missed
    scheduled_for: dt.datetime | None = None
    ran_at: dt.datetime = Field(default_factory=utcnow)
    issues: int = 0
    enqueued: int = 0


class ReceivedItem(SQLModel, table=True):
    """An item a subscriber has been sent, so no later digest repeats it."""

    __tablename__ = "received_item"

    subscriber_id: int = Field(foreign_key="subscriber.id", primary_key=True, ondelete="CASCADE")
    item_id: int = Field(foreign_key="item.id", primary_key=True, ondelete="CASCADE")
    delivery_id: int = Field(foreign_key="delivery.id", index=True)
    received_at: dt.datetime = Field(default_factory=utcnow)


class WebRateLimit(SQLModel, table=True):
    """Subscribe-form hits of one client or address in one fixed window, for every web process.

    `key` is a keyed hash: the table never holds the addresses of people who did not subscribe,
    nor readers' IP addresses. `slot` is the window's number: seconds since 2024 // its length
    (an INTEGER column lasts until 2092 even with one-second windows).
    """

    __tablename__ = "web_rate_limit"

    scope: str = Field(primary_key=True, max_length=16)
    key: str = Field(primary_key=True, max_length=64)
    slot: int = Field(primary_key=True, index=True)
    hits: int = 0


class MissionClosure(SQLModel, table=True):
    """Days staff closed a mission on, besides its host's public holidays and its weekend."""

    __tablename__ = "mission_closure"

    id: int | None = Field(default=None, primary_key=True)
    embassy_code: str = Field(foreign_key="embassy.code", index=True, max_length=60)
    first_day: dt.date
    last_day: dt.date
    reason: str = ""
    created_at: dt.datetime = Field(default_factory=utcnow)


class StaffUser(SQLModel, table=True):
    """A console account: argon2id password, TOTP secret sealed with the instance key."""

    __tablename__ = "staff_user"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, max_length=320)
    name: str = ""
    locale: str = Field(default="zh", max_length=10)
    password_hash: str = Field(max_length=200)
    totp_secret: str = Field(default="", max_length=200)  # credentials.seal(), never plain
    # The last TOTP time step accepted, so one code cannot be replayed within its window.
    totp_step: int = 0
    recovery_codes: list[str] = _json()  # keyed hashes; a used code is removed
    status: str = Field(default="invited", max_length=20)  # roles.StaffStatus
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)
    last_login_at: dt.datetime | None = None


class StaffGrant(SQLModel, table=True):
    """One role over one mission (an embassy code, or `*` for all)."""

    __tablename__ = "staff_grant"
    __table_args__ = (UniqueConstraint("staff_id", "role", "mission"),)

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff_user.id", index=True, ondelete="CASCADE")
    role: str = Field(max_length=20)  # roles.Role
    mission: str = Field(default="*", max_length=60)


class StaffSession(SQLModel, table=True):
    """A console login, kept server-side; the cookie holds a token whose sha256 is the id."""

    __tablename__ = "staff_session"

    id: str = Field(primary_key=True, max_length=64)
    staff_id: int = Field(foreign_key="staff_user.id", index=True, ondelete="CASCADE")
    created_at: dt.datetime = Field(default_factory=utcnow)
    last_seen_at: dt.datetime = Field(default_factory=utcnow)
    mfa_at: dt.datetime | None = None  # the second factor passed (None: password only)
    ip: str = Field(default="", max_length=45)
    user_agent: str = Field(default="", max_length=300)
    revoked_at: dt.datetime | None = None


class AdminEvent(SQLModel, table=True):
    """One link of the append-only audit chain (`newsletter.audit_chain`): who did what, where.

    Never holds a subscriber's address (the target is `subscriber:<id>`), so an erasure has
    nothing to scrub here and the chain stays whole.
    """

    __tablename__ = "admin_event"
    __table_args__ = (Index("ix_admin_event_action_at", "action", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = Field(default_factory=utcnow)
    actor_kind: str = Field(max_length=20)  # actors.ActorKind
    actor_id: str = Field(default="", max_length=320)
    via: str = Field(default="", max_length=20)
    action: str = Field(max_length=60)
    target: str = Field(default="", max_length=340)
    mission: str = Field(default="", max_length=60)
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    ip: str = Field(default="", max_length=45)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class CampaignRequest(SQLModel, table=True):
    """A request to send an issue on a schedule, and its four-eyes sign-off (签发).

    Bound to the issue's content hash: an edit of the issue voids it (`campaign_requests`).
    """

    __tablename__ = "campaign_request"

    id: int | None = Field(default=None, primary_key=True)
    issue_id: int = Field(foreign_key="issue.id", index=True)
    issue_hash: str = Field(max_length=64)  # sha256 of the issue's stored text when requested
    schedule: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )  # approvals.ScheduleSpec.as_dict()
    state: str = Field(default="requested", max_length=20)  # campaign_requests.RequestState
    requested_by: str = Field(max_length=340)  # Actor.label
    requested_at: dt.datetime = Field(default_factory=utcnow)
    decided_by: str = Field(default="", max_length=340)
    decided_at: dt.datetime | None = None
    comment: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    override: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id")


class CooperationRequest(SQLModel, table=True):
    """A reader's "connect me" (对接) on a demand item, and staff's follow-up of it.

    One per subscriber and item: a second answer updates the note. Erasure keeps the item,
    mission, time and state, and drops the person (`subscriber_id`, note, organisation).
    """

    __tablename__ = "cooperation_request"
    __table_args__ = (UniqueConstraint("issue_id", "item_id", "subscriber_id"),)

    id: int | None = Field(default=None, primary_key=True)
    issue_id: int = Field(foreign_key="issue.id", index=True)
    item_id: str = Field(max_length=80)
    subscriber_id: int | None = Field(default=None, foreign_key="subscriber.id", index=True)
    mission: str = Field(default="", max_length=60, index=True)  # embassy code
    note: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    organisation: str = Field(default="", max_length=200)
    country: str = Field(default="", max_length=100)
    state: str = Field(default="new", max_length=20)  # cooperation_requests.RequestState
    staff_note: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class IssueRevision(SQLModel, table=True):
    """One saved text of an issue (an import or a YAML edit), numbered from 1 per issue."""

    __tablename__ = "issue_revision"
    __table_args__ = (UniqueConstraint("issue_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    issue_id: int = Field(foreign_key="issue.id")
    number: int
    source_yaml: str = Field(sa_column=Column(Text, nullable=False))
    saved_by: str = Field(default="", max_length=340)  # the actor's label: staff e-mail, OS user
    saved_at: dt.datetime = Field(default_factory=utcnow)
