"""The campaign page's controls as one audited call: pause, resume, cancel, resend unknown, take
back missed. Each runs the campaign service that does it, then joins the audit chain with who
asked and what it changed (the services below log only).

The event is written once the action has committed: an action that fails leaves no event, and
the rare crash between the two leaves the change without its event rather than an event
claiming a change that never happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from newsletter.actors import Actor
from newsletter.config import Settings
from newsletter.db import Engine
from newsletter.services import audit, campaigns, sending
from newsletter.services.units import unit_of_work


class Control(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RESEND_UNKNOWN = "resend-unknown"
    TAKE_BACK = "take-back"  # rows a missed or cancelled plan skipped go out now

    @property
    def sends(self) -> bool:
        """Whether it puts mail on the wire now (a step-up action)."""
        return self in (Control.RESEND_UNKNOWN, Control.TAKE_BACK)


@dataclass(frozen=True)
class Done:
    control: Control
    campaign: int
    state: str
    detail: dict[str, object]


def control(
    settings: Settings,
    campaign_id: int,
    what: Control,
    *,
    actor: Actor,
    ip: str = "",
    db: Engine | None = None,
) -> Done:
    detail: dict[str, object] = {"campaign": campaign_id}
    if what == Control.PAUSE:
        state = campaigns.pause_campaign(settings, campaign_id, actor=actor, db=db).state
    elif what == Control.RESUME:
        state = campaigns.resume_campaign(settings, campaign_id, actor=actor, db=db).state
    elif what == Control.CANCEL:
        cancelled = campaigns.cancel_campaign(settings, campaign_id, actor=actor, db=db)
        detail |= {"skipped": cancelled.skipped, "in_flight": cancelled.in_flight,
                   "plans": list(cancelled.plans)}  # fmt: skip
        state = "cancelled"
    elif what == Control.RESEND_UNKNOWN:
        detail["requeued"] = campaigns.resend_unknown(settings, campaign_id, actor=actor, db=db)
        state = campaigns.campaign_status(settings, campaign_id, db=db).state
    else:
        slug = campaigns.campaign_status(settings, campaign_id, db=db).issue
        prepared = sending.prepare_campaign(settings, slug, actor=actor, db=db)
        detail |= {"pending": prepared.pending, "added": prepared.added}
        state = campaigns.campaign_status(settings, prepared.campaign, db=db).state
    slug = campaigns.campaign_status(settings, campaign_id, db=db).issue
    with unit_of_work(settings, db) as session:
        audit.record(session, actor, f"campaign.{what.value}", target=f"issue:{slug}", ip=ip,
                     detail=detail)  # fmt: skip
    return Done(what, campaign_id, state, detail)
