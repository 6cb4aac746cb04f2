"""Campaign requests in the database: add, find, list, decide, and void them when their issue
changes. Flushes, never commits (the services own the transaction).

A request is bound to the issue's content hash (sha256 of its stored text). `void_changed` is
called by `issues.save_issue` whenever an issue is stored again, so any edit from any door voids
the requests made for the old text; an approved one's campaign is cancelled in the same
transaction, and nothing of it is sent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from enum import StrEnum

from sqlalchemy import update
from sqlmodel import Session, col, select

from newsletter import audit_log
from newsletter.errors import NotFoundError
from newsletter.models import (
    AdminEvent,
    Campaign,
    CampaignRequest,
    CampaignState,
    Delivery,
    DeliveryState,
    IssueRecord,
    SkipReason,
    utcnow,
)
from newsletter.states import SKIP_REPLY, WAITING, move


class RequestState(StrEnum):
    REQUESTED = "requested"  # waiting for a second person's sign-off
    APPROVED = "approved"  # signed off; its campaign is scheduled (or sent)
    REJECTED = "rejected"
    CANCELLED = "cancelled"  # withdrawn by its requester before a decision
    VOID = "void"  # the issue changed after the request: it no longer says what was signed


OPEN = (RequestState.REQUESTED, RequestState.APPROVED)
# The audit actions that store an issue's text: who did one last is the issue's last editor.
# `issue.edited` is what `services.issues.save_issue_yaml` records; the others name imports.
EDIT_ACTIONS = ("issue.edited", "issue.imported", "issue.import", "issue.edit")
# A campaign this far along is not cancelled by an edit: nothing more of it would go out.
_CANCELLABLE = (CampaignState.READY, CampaignState.SCHEDULED, CampaignState.SENDING,
                CampaignState.PAUSED)  # fmt: skip


def content_hash(source_yaml: str) -> str:
    return hashlib.sha256(source_yaml.encode("utf-8")).hexdigest()


def issue_target(slug: str) -> str:
    return f"issue:{slug}"


def add(session: Session, request: CampaignRequest) -> CampaignRequest:
    session.add(request)
    session.flush()
    return request


def get(session: Session, request_id: int) -> CampaignRequest:
    found = session.get(CampaignRequest, request_id)
    if found is None:
        raise NotFoundError(
            "campaign request", str(request_id), "see `newsletter campaign requests`"
        )
    return found


def issue_of(session: Session, request: CampaignRequest) -> IssueRecord:
    issue = session.get(IssueRecord, request.issue_id)
    assert issue is not None  # a foreign key holds it
    return issue


def listed(
    session: Session, states: Sequence[str] = (), *, limit: int = 200
) -> list[tuple[CampaignRequest, str]]:
    """Requests (in `states`, when given) newest first, each with its issue's slug."""
    query = select(CampaignRequest, IssueRecord.slug).join(
        IssueRecord, col(IssueRecord.id) == col(CampaignRequest.issue_id)
    )
    if states:
        query = query.where(col(CampaignRequest.state).in_(list(states)))
    query = query.order_by(col(CampaignRequest.id).desc()).limit(limit)
    return [(r, slug) for r, slug in session.exec(query).all()]


def for_campaign(session: Session, campaign_id: int) -> CampaignRequest | None:
    query = select(CampaignRequest).where(CampaignRequest.campaign_id == campaign_id)
    return session.exec(query.order_by(col(CampaignRequest.id).desc())).first()


def open_for_issue(session: Session, issue_id: int) -> list[CampaignRequest]:
    query = select(CampaignRequest).where(
        CampaignRequest.issue_id == issue_id, col(CampaignRequest.state).in_(list(OPEN))
    )
    return list(session.exec(query.order_by(col(CampaignRequest.id))).all())


def last_editor(session: Session, slug: str) -> str | None:
    """The actor label (`staff:a@b`, `cli:alice`) of the newest audited edit of the issue."""
    query = select(AdminEvent).where(
        AdminEvent.target == issue_target(slug), col(AdminEvent.action).in_(EDIT_ACTIONS)
    )
    event = session.exec(query.order_by(col(AdminEvent.id).desc())).first()
    if event is None:
        return None
    return f"{event.actor_kind}:{event.actor_id}" if event.actor_id else event.actor_kind


def decide(
    session: Session,
    request: CampaignRequest,
    state: RequestState,
    *,
    by: str,
    at: dt.datetime,
    comment: str = "",
    override: str = "",
) -> None:
    request.state = state
    request.decided_by = by[:340]
    request.decided_at = at
    request.comment = comment
    request.override = override
    session.add(request)
    session.flush()


def cancel_unsent(session: Session, campaign: Campaign, reason: str) -> int:
    """Stop a campaign for good: rows not yet sent are skipped; how many (as the delivery
    layer's cancel does, which storage may not call)."""
    if campaign.state not in _CANCELLABLE:
        return 0
    move(campaign, CampaignState.CANCELLED, reason=reason)
    session.add(campaign)
    why = SkipReason.CAMPAIGN_CANCELLED
    result = session.execute(
        update(Delivery)
        .where(col(Delivery.campaign_id) == campaign.id, col(Delivery.state).in_(WAITING))
        .values(state=DeliveryState.SKIPPED, reply=SKIP_REPLY[why], skip_reason=why,
                updated_at=utcnow())
    )  # fmt: skip
    session.flush()
    return int(getattr(result, "rowcount", 0) or 0)


def void_changed(session: Session, issue: IssueRecord) -> list[int]:
    """Void the open requests of `issue` made for other text than it now holds; the ids.

    An approved request's campaign is cancelled (its planned sends then fire to no effect):
    what was signed off is not what would be sent.
    """
    assert issue.id is not None
    now = utcnow()
    current = content_hash(issue.source_yaml)
    voided: list[int] = []
    for request in open_for_issue(session, issue.id):
        if request.issue_hash == current:
            continue
        was = request.state
        request.state = RequestState.VOID
        request.decided_at = request.decided_at or now
        session.add(request)
        skipped = 0
        if was == RequestState.APPROVED and request.campaign_id is not None:
            campaign = session.get(Campaign, request.campaign_id)
            if campaign is not None:
                skipped = cancel_unsent(
                    session, campaign,
                    f"issue {issue.slug} changed after its sign-off (request {request.id} void): "
                    "request it again",
                )  # fmt: skip
        audit_log.append(
            session,
            audit_log.Entry(
                actor_kind="system",
                actor_id="sign-off",
                via="issue-edit",
                action="campaign.request-void",
                target=issue_target(issue.slug),
                detail={
                    "request": request.id,
                    "was": str(was),
                    "campaign": request.campaign_id,
                    "skipped": skipped,
                },
            ),  # fmt: skip
            at=now,
        )
        assert request.id is not None
        voided.append(request.id)
    session.flush()
    return voided
