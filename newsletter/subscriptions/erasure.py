"""Erase a subscriber's personal data, keeping only a keyed hash of the address as a suppression."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlmodel import Session, col, select

from newsletter import cooperation_requests
from newsletter.actors import Actor
from newsletter.errors import ListImportError, NotFoundError
from newsletter.models import AuditEvent, Delivery, Subscriber, SubscriberStatus
from newsletter.subscriptions import store, suppression
from newsletter.subscriptions.lists import normalise_email

_REDACTED = "[erased]"


@dataclass(frozen=True)
class Erasure:
    address: str
    subscriber_id: int | None  # None: the address was not on the list, only suppressed
    newly_suppressed: bool


def _scrub(text: str, address: str) -> str:
    # SMTP replies and audit details may quote the address ("<x@y>: user unknown").
    return re.sub(re.escape(address), _REDACTED, text, flags=re.IGNORECASE)


def _scrub_records(session: Session, subscriber_id: int, address: str) -> None:
    events = session.exec(select(AuditEvent).where(AuditEvent.subscriber_id == subscriber_id))
    for event in events:
        event.detail = _scrub(event.detail, address)
        session.add(event)
    rows = session.exec(select(Delivery).where(col(Delivery.subscriber_id) == subscriber_id))
    for row in rows:
        row.reply = _scrub(row.reply, address)
        session.add(row)


def _anonymise(session: Session, subscriber: Subscriber, *, actor: Actor) -> None:
    assert subscriber.id is not None
    if subscriber.status not in store.DEPARTED:
        store.set_status(
            session, subscriber, SubscriberStatus.UNSUBSCRIBED,
            actor=actor.label, via=actor.via, detail="erased",
        )  # fmt: skip
    _scrub_records(session, subscriber.id, subscriber.email)
    store.set_sectors(session, subscriber.id, ())
    # Their "connect me" requests stay as counts by item and mission, no longer theirs.
    cooperation_requests.anonymise(session, subscriber.id)
    subscriber.email = suppression.erased_address(subscriber.id)
    subscriber.name = subscriber.title = subscriber.consent_source = ""
    # The token key stays: an old unsubscribe link then still answers "unsubscribed".
    session.add(subscriber)
    store.audit(session, subscriber, "erased", actor=actor.label, via=actor.via)


class NotListedError(NotFoundError):
    """`erase` of an address nobody on the list has: nothing erased, nothing suppressed.

    Worded exactly as any "subscriber not found", so a scoped actor cannot tell an address of
    another mission from one nobody has.
    """

    def __init__(self, address: str) -> None:
        super().__init__("subscriber", address, "see `newsletter subscribers list`")


def erase(
    session: Session, secret: bytes, email: str, *, actor: Actor, suppress_unlisted: bool = False
) -> Erasure:
    """Erase the person behind `email` and suppress the address (no commit).

    An address not on the list is suppressed only with `suppress_unlisted`: otherwise a typo
    would be kept from every future import with no word said (`NotListedError`). One already
    suppressed (erased before) is left as it is.
    """
    try:
        address = normalise_email(email)
    except ValueError as exc:
        raise ListImportError(f"{email!r} is not a valid address: {exc}") from None
    subscriber = store.by_address(session, address)
    if subscriber is None and not suppress_unlisted:
        if suppression.is_suppressed(session, secret, address):
            return Erasure(address, None, newly_suppressed=False)
        raise NotListedError(address)
    if subscriber is not None:
        _anonymise(session, subscriber, actor=actor)
    added = suppression.suppress(session, secret, address, reason="erased on request")
    if subscriber is None and added:
        # Nobody's row to hang it on. The entry names only the keyed hash: whoever asked never
        # to be mailed must not be named by the record of it.
        digest = suppression.address_hash(secret, address)
        store.audit_unlisted(
            session, "suppressed", actor=actor.label, via=actor.via,
            detail=f"suppression {digest[:16]} added (address not on the list)",
        )  # fmt: skip
    session.flush()
    return Erasure(address, subscriber.id if subscriber else None, added)
