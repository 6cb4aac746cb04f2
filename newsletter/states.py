"""Every state the newsletter keeps, the moves allowed between them, and their named groups (pure).

Subscribers, campaigns, ledger rows, scheduled plans and digests. Nothing here touches the
database: storage code reads the tables and the groups, and `move` is the one place a campaign's
state is ever assigned, so the table below is the whole truth about what a campaign may do.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Protocol

from newsletter.errors import NewsletterError


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- subscribers ------------------------------------------------------------------------------


class SubscriberStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    # Confirmed the address; a list manager or the mission's liaison has yet to let them in
    # ([web] approval = "mission"). Not active: no issue reaches them.
    AWAITING = "awaiting_approval"


_S = SubscriberStatus
# Moves anyone may ask for; reaching `active` from a departed state needs a fresh confirmation
# (see `lifecycle.confirm`), never an import or a staff edit; `unbounce` alone undoes a mail
# system's fault. UNSUBSCRIBED and COMPLAINED never lead to BOUNCED: the person's choice stands.
# A confirmation reaches `awaiting_approval` instead of `active` when sign-ups need approval;
# only `lifecycle.approve` leaves it for `active`, and a refusal (`reject`) ends it unsubscribed.
ALLOWED: dict[SubscriberStatus, frozenset[SubscriberStatus]] = {
    _S.PENDING: frozenset({_S.ACTIVE, _S.AWAITING, _S.UNSUBSCRIBED, _S.BOUNCED, _S.COMPLAINED}),
    _S.ACTIVE: frozenset({_S.UNSUBSCRIBED, _S.BOUNCED, _S.COMPLAINED}),
    _S.UNSUBSCRIBED: frozenset({_S.ACTIVE, _S.AWAITING}),
    _S.BOUNCED: frozenset({_S.ACTIVE, _S.AWAITING, _S.UNSUBSCRIBED}),
    _S.COMPLAINED: frozenset({_S.ACTIVE, _S.AWAITING}),
    _S.AWAITING: frozenset({_S.ACTIVE, _S.UNSUBSCRIBED, _S.COMPLAINED}),
}
# A bounce is the mail system's verdict, never the person's: it may end only a subscription
# that works or awaits confirmation. An unsubscribe, a complaint or an erasure stands.
BOUNCEABLE = frozenset({_S.PENDING, _S.ACTIVE})


# --- ledger rows ------------------------------------------------------------------------------


class DeliveryState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNKNOWN = "unknown"


_D = DeliveryState
# Tuples, in a fixed order, so SQL `IN (...)` lists and their cached statements stay the same.
# To send or to retry, whenever due.
WAITING: tuple[DeliveryState, ...] = (_D.QUEUED, _D.RETRY)
# What a sender may hold under its lease: waiting to go out, or on the wire.
HELD: tuple[DeliveryState, ...] = (*WAITING, _D.SENDING)
# Not yet settled: a campaign with a live row is not over (the same rows as HELD, read per
# campaign rather than per sender).
LIVE: tuple[DeliveryState, ...] = HELD
# Settled: sent, failed, skipped, or unknown (resent only when staff accept a double).
FINAL: tuple[DeliveryState, ...] = (_D.SENT, _D.FAILED, _D.SKIPPED, _D.UNKNOWN)
# The order reports list them in.
LEDGER_STATES: tuple[DeliveryState, ...] = tuple(DeliveryState)


class SkipReason(StrEnum):
    """Why a row was skipped: kept beside the reply text, which says the same for people."""

    NOT_ACTIVE = "not_active"  # the subscriber left before their row came up
    MISSED_WINDOW = "missed_window"  # its send window closed while nothing was sending
    PLAN_CANCELLED = "plan_cancelled"  # staff cancelled the scheduled send it belonged to
    CAMPAIGN_CANCELLED = "campaign_cancelled"  # staff cancelled the whole campaign


# The reply text each reason writes (older databases hold only these; migration 0007 reads them).
SKIP_REPLY: dict[SkipReason, str] = {
    SkipReason.NOT_ACTIVE: "subscriber no longer active",
    SkipReason.MISSED_WINDOW: "missed: send window closed",
    SkipReason.PLAN_CANCELLED: "schedule cancelled",
    SkipReason.CAMPAIGN_CANCELLED: "campaign cancelled",
}
# Rows skipped for these reasons were never sent and nobody decided against them: sending or
# scheduling the issue again takes them back.
RESCHEDULABLE: tuple[SkipReason, ...] = (SkipReason.MISSED_WINDOW, SkipReason.PLAN_CANCELLED)


# --- scheduled plans and digests --------------------------------------------------------------


class PlanState(StrEnum):
    PLANNED = "planned"
    FIRED = "fired"
    MISSED = "missed"
    CANCELLED = "cancelled"


class DigestState(StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"


# --- campaigns --------------------------------------------------------------------------------


class CampaignState(StrEnum):
    READY = "ready"  # nothing under way: send or schedule it
    SCHEDULED = "scheduled"  # every row still to send waits for a planned send
    SENDING = "sending"  # rows are due now (or on the wire)
    PAUSED = "paused"  # held by staff or by a fault, with the reason
    FINISHED = "finished"  # nothing left to send, and somebody received it
    CANCELLED = "cancelled"  # for good: its unsent rows are skipped


_C = CampaignState
CAMPAIGN_MOVES: dict[CampaignState, frozenset[CampaignState]] = {
    _C.READY: frozenset({_C.SCHEDULED, _C.SENDING, _C.PAUSED, _C.CANCELLED}),
    # A plan fires (sending); its rows are missed or cancelled (finished if someone got it
    # earlier, else ready again).
    _C.SCHEDULED: frozenset({_C.SENDING, _C.READY, _C.FINISHED, _C.PAUSED, _C.CANCELLED}),
    # Rows sent, the rest wait for a later plan (scheduled); nobody received it (ready).
    _C.SENDING: frozenset({_C.SCHEDULED, _C.PAUSED, _C.FINISHED, _C.READY, _C.CANCELLED}),
    _C.PAUSED: frozenset({_C.SENDING, _C.SCHEDULED, _C.CANCELLED}),
    # New subscribers since, or failed rows requeued: the same campaign goes on.
    _C.FINISHED: frozenset({_C.SENDING, _C.SCHEDULED}),
    _C.CANCELLED: frozenset(),
}
# Campaigns a sender may work on (a scheduled one once a row's window opens).
SENDABLE: tuple[CampaignState, ...] = (_C.READY, _C.SCHEDULED, _C.SENDING)

# What staff are told they tried, by the state they wanted.
_WANTED = {
    _C.READY: "made ready again",
    _C.SCHEDULED: "scheduled",
    _C.SENDING: "sent",
    _C.PAUSED: "paused",
    _C.FINISHED: "finished",
    _C.CANCELLED: "cancelled",
}


def _what_to_do(campaign_id: int, state: str) -> str:
    hints: dict[str, str] = {
        _C.READY: "it is not under way; `newsletter send SLUG` or `newsletter schedule SLUG` "
        "sends it",
        _C.SCHEDULED: "`newsletter schedule list` says when it goes; "
        f"`newsletter campaign pause {campaign_id}` holds it",
        _C.SENDING: f"`newsletter campaign status {campaign_id}` follows it; "
        f"`newsletter campaign pause {campaign_id}` holds it",
        _C.PAUSED: f"`newsletter campaign resume {campaign_id}` sends it on; "
        f"`newsletter campaign cancel {campaign_id}` stops it for good",
        _C.FINISHED: f"`newsletter campaign report {campaign_id}` says who got what; "
        "`newsletter send SLUG` sends it to subscribers added since",
        _C.CANCELLED: "a cancelled campaign is never sent again; `newsletter send SLUG` "
        "starts a new one",
    }
    return hints.get(state, "see `newsletter campaign list`")


class CampaignStateError(NewsletterError, ValueError):
    """A campaign cannot do what was asked in the state it is in; the message says what can."""

    def __init__(self, campaign_id: int, state: str, wanted: str) -> None:
        self.campaign_id = campaign_id
        self.state = state
        self.wanted = wanted
        super().__init__(
            f"campaign {campaign_id} is {state}; it cannot be {wanted}; "
            f"{_what_to_do(campaign_id, state)}"
        )


class CampaignRow(Protocol):
    """What `move` reads and writes of a campaign (the table row, without importing it)."""

    id: int | None
    state: CampaignState
    reason: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


def can_move(state: str, to: CampaignState) -> bool:
    return to in CAMPAIGN_MOVES.get(CampaignState(state), frozenset())


def move(
    campaign: CampaignRow,
    to: CampaignState,
    *,
    reason: str = "",
    now: dt.datetime | None = None,
    wanted: str | None = None,
) -> CampaignState:
    """Put a campaign in state `to` with `reason` (the last one goes); the state it left.

    Not a commit: the caller's transaction holds the change with whatever caused it. `wanted`
    names the staff request in the error ("resumed") when it is not simply the state's verb.
    """
    current = CampaignState(campaign.state)
    if not can_move(current, to):
        raise CampaignStateError(campaign.id or 0, str(current), wanted or _WANTED[to])
    when = now or _utcnow()
    campaign.state = to
    campaign.reason = reason
    if to == CampaignState.SENDING and campaign.started_at is None:
        campaign.started_at = when
    campaign.finished_at = when if to == CampaignState.FINISHED else None
    return current
