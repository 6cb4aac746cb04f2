"""What mail that comes back does to the ledger and the lists (storage: no commit).

A hard bounce marks the ledger row of the message it returns; a complaint ends the
subscription and suppresses the address; an `unsubscribe <token>` mail unsubscribes as the
one-click link does. Each is idempotent: a second reading finds the change already made.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlmodel import Session, select

from newsletter.actors import Actor
from newsletter.delivery.bounces import Bounce
from newsletter.delivery.inbox import Complaint
from newsletter.delivery.verp import RowRef
from newsletter.models import Delivery, DeliveryState, Subscriber, SubscriberStatus
from newsletter.states import ALLOWED
from newsletter.subscriptions import lifecycle, suppression
from newsletter.subscriptions.store import audit
from newsletter.tokens import InvalidToken, Purpose

# A row's state stays `sent` (the message left, and digests, plans and the issue history count
# on that); its reply says the mailbox sent it back, before the relay's original answer.
BOUNCED_REPLY = "bounced:"
COMPLAINT = Actor.system("feedback-loop", "complaint")  # RFC 5965 reports, from the provider
MAILTO = Actor.subscriber("mailto")  # the List-Unsubscribe mailto: the person's own request
_MAX_REPLY = 1000


class Done(StrEnum):
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    ALREADY = "already"  # the change was made before: nothing to do
    NOT_OURS = "not-ours"  # names no message we sent: forged, or someone else's
    INVALID = "invalid-token"  # forged, altered or for something else


def row_of(
    session: Session, *, delivery: RowRef | None, campaign_id: int | None, message_id: str
) -> Delivery | None:
    """The ledger row a signed return path names, else the one that sent `message_id`."""
    if delivery is not None:
        query = select(Delivery).where(
            Delivery.campaign_id == delivery.campaign_id,
            Delivery.subscriber_id == delivery.subscriber_id,
        )
        return session.exec(query).first()
    if campaign_id is None or not message_id:
        return None
    query = select(Delivery).where(
        Delivery.campaign_id == campaign_id, Delivery.message_id == message_id
    )
    return session.exec(query).first()


def mark_bounced(session: Session, bounce: Bounce, *, now: dt.datetime) -> bool:
    """The returned message's row says it bounced, with the remote server's words; False when
    no row is named or it says so already."""
    row = row_of(
        session, delivery=bounce.delivery, campaign_id=bounce.campaign_id,
        message_id=bounce.message_id,
    )  # fmt: skip
    if row is None or row.state != DeliveryState.SENT or row.reply.startswith(BOUNCED_REPLY):
        return False
    said = f"{BOUNCED_REPLY} {bounce.status} {bounce.diagnostic}".strip()
    row.reply = f"{said} (relay: {row.reply})"[:_MAX_REPLY] if row.reply else said[:_MAX_REPLY]
    row.updated_at = now
    session.add(row)
    return True


def complain(session: Session, secret: bytes, complaint: Complaint) -> tuple[Done, str]:
    """The reader who marked our message as spam: complained (when their state allows) and
    their address suppressed; (outcome, their address)."""
    row = row_of(
        session, delivery=complaint.delivery, campaign_id=complaint.campaign_id,
        message_id=complaint.message_id,
    )  # fmt: skip
    subscriber = session.get(Subscriber, row.subscriber_id) if row is not None else None
    if subscriber is None or suppression.is_erased(subscriber):
        return Done.NOT_OURS, ""
    status = SubscriberStatus(subscriber.status)
    detail = f"{complaint.feedback_type} report about {complaint.message_id or 'a message'}"
    changed = False
    if SubscriberStatus.COMPLAINED in ALLOWED[status]:
        changed = lifecycle.change(
            session, subscriber, SubscriberStatus.COMPLAINED, actor=COMPLAINT, detail=detail
        )
    if suppression.suppress(session, secret, subscriber.email, reason="complaint"):
        if not changed:  # an unsubscribed or bounced reader: the suppression is the change
            audit(session, subscriber, "complaint", old=str(status), actor=COMPLAINT.label,
                  via=COMPLAINT.via, detail=f"{detail}; address suppressed")  # fmt: skip
        changed = True
    session.flush()
    return (Done.COMPLAINED if changed else Done.ALREADY), subscriber.email


def unsubscribe_by_mail(
    session: Session, secret: bytes, token: str, *, now: dt.datetime
) -> tuple[Done, str]:
    """The one-click change for a verified token, audited as via `mailto`."""
    try:
        subscriber, _ = lifecycle.from_token(session, secret, token, Purpose.UNSUBSCRIBE, now=now)
    except InvalidToken:
        return Done.INVALID, ""
    changed = lifecycle.unsubscribe(session, subscriber, actor=MAILTO)
    session.flush()
    return (Done.UNSUBSCRIBED if changed else Done.ALREADY), subscriber.email
