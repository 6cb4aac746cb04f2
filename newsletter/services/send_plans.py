"""`send --dry-run`: who a send of an issue would reach now, and who it would skip and why.

Read only: the ledger, the subscribers and the issue are read in one session that writes
nothing, so a dry run can never start, change or burn a campaign.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from newsletter import interests, runtime
from newsletter.actors import Actor, Scope
from newsletter.config import Settings
from newsletter.db import Engine, Session
from newsletter.delivery.campaigns import CampaignPausedError
from newsletter.delivery.compose import RecipientData, profile_for
from newsletter.delivery.send_facts import Candidate, candidates, real_campaign
from newsletter.issues import get_issue
from newsletter.models import CampaignState, DeliveryState, SubscriberStatus, utcnow
from newsletter.scheduling.cadence import stored
from newsletter.services.sending import Route, route
from newsletter.services.units import database
from newsletter.states import RESCHEDULABLE

log = logging.getLogger(__name__)

# Why a subscriber is not sent the issue now; the keys `--json` prints.
ALREADY_SENT = "already sent"
FAILED = "failed before (`newsletter campaign requeue-failed ID` retries them)"
UNKNOWN = "caught mid-send by a crash (`--resend-unknown` resends them)"
SCHEDULED = "waiting for a scheduled send (`newsletter schedule list`)"
RETRY_LATER = "refused for now, retried later by the sender"
ON_THE_WIRE = "being sent right now by another sender"
CANCELLED = "skipped by staff (campaign cancelled)"
BY_DIGEST = "reads a weekly or monthly digest instead (`newsletter subscribers show EMAIL`)"
ON_LEAVE = "on leave (paused until a later date)"


def _not_active(status: str) -> str:
    return f"not active ({status})"


@dataclass(frozen=True)
class SendPlan:
    """What `send` would do now; nothing of it is stored."""

    issue: str
    campaign: int | None  # the campaign it would continue; None: a new one
    route: Route
    recipients: int
    by_mission: dict[str, int]
    profiles: int
    skipped: dict[str, int] = field(default_factory=dict)
    refused: str = ""  # why `send` would refuse outright (a paused campaign)

    def as_dict(self) -> dict[str, object]:
        return {
            "issue": self.issue, "campaign": self.campaign, "transport": self.route.transport,
            "destination": self.route.destination, "rehearsal": self.route.rehearsal,
            "recipients": self.recipients, "by_mission": self.by_mission,
            "profiles": self.profiles, "skipped": self.skipped, "refused": self.refused,
        }  # fmt: skip


def _verdict(who: Candidate, *, now: dt.datetime, resend_unknown: bool, fresh: bool) -> str | None:
    """None: this subscriber is sent the issue now; else why not (a key of `skipped`)."""
    active = who.status == SubscriberStatus.ACTIVE
    state = None if fresh else who.row_state
    if state is None:
        # Not in the ledger yet: added if active and taking each issue (`enqueue_active`).
        if not active:
            return _not_active(who.status)
        cadence = stored(who.delivery_mode, who.mode_weekday, who.paused_until)
        if cadence.paused_on(now.date()):
            return ON_LEAVE
        return None if cadence.takes_each_issue(now.date()) else BY_DIGEST
    if state == DeliveryState.SKIPPED and who.row_skip_reason in RESCHEDULABLE:
        # Left behind by a missed or cancelled plan: `send` takes those back.
        return None if active else _not_active(who.status)
    if state == DeliveryState.SENT:
        return ALREADY_SENT
    if state == DeliveryState.FAILED:
        return FAILED
    if state == DeliveryState.UNKNOWN:
        return None if resend_unknown and active else UNKNOWN
    if state == DeliveryState.SENDING:
        return ON_THE_WIRE
    if state == DeliveryState.SKIPPED:
        if who.row_skip_reason == "campaign_cancelled":
            return CANCELLED
        return _not_active(who.status) if not active else "skipped"
    # Queued or to retry: the engine skips anyone no longer active when their row comes up.
    if not active:
        return _not_active(who.status)
    if who.row_not_before is not None and who.row_not_before > now:
        return SCHEDULED
    if (
        state == DeliveryState.RETRY
        and who.row_next_attempt is not None
        and who.row_next_attempt > now
    ):
        return RETRY_LATER
    return None


def plan_send(
    settings: Settings,
    slug: str,
    *,
    actor: Actor,
    scope: Scope,
    transport: str | None = None,
    outbox: Path | None = None,
    resend_unknown: bool = False,
    db: Engine | None = None,
) -> SendPlan:
    """Who `send` would reach now (by mission, in how many profiles), and who not and why.

    `scope` limits the people counted to the actor's missions (the console's staff).
    """
    path = route(settings, transport, outbox)
    now = utcnow()
    with database(settings, db) as engine, Session(engine) as session:
        record = get_issue(session, slug).record
        campaign = None if path.rehearsal else real_campaign(session, record)
        refused = ""
        if campaign is not None and campaign.state == CampaignState.PAUSED:
            refused = str(CampaignPausedError(campaign))
        people = [
            c
            for c in candidates(session, campaign.id if campaign else None)
            if scope.allows(c.embassy)
        ]
        skipped: Counter[str] = Counter()
        chosen: list[Candidate] = []
        for who in people:
            why = _verdict(who, now=now, resend_unknown=resend_unknown, fresh=campaign is None)
            if why is None:
                chosen.append(who)
            else:
                skipped[why] += 1
        sectors = interests.sectors_of(session, [c.subscriber_id for c in chosen])
        context = runtime.issue_context(session, settings, slug)
        campaign_id = campaign.id if campaign is not None else None
    profiles = {
        profile_for(
            context,
            RecipientData(
                subscriber_id=c.subscriber_id,
                email=c.email,
                name=c.name,
                language=c.language,
                embassy=c.embassy,
                sectors=sectors.get(c.subscriber_id, ()),
                token_key=c.token_key,
            ),  # fmt: skip
        )
        for c in chosen
    }
    by_mission = Counter(c.embassy for c in chosen)
    log.info(
        "%s (via %s) dry-runs a send of %s: %d recipients",
        actor.label,
        actor.via,
        slug,
        len(chosen),
    )
    return SendPlan(
        issue=slug, campaign=campaign_id, route=path,
        recipients=len(chosen), by_mission=dict(sorted(by_mission.items())),
        profiles=len(profiles), skipped=dict(skipped.most_common()), refused=refused,
    )  # fmt: skip
