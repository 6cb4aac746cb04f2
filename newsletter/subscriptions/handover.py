"""Posts outlive people: hand a subscriber's post (sectors, language) to their successor."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from newsletter import interests
from newsletter.actors import Actor
from newsletter.errors import ListImportError
from newsletter.models import Subscriber, SubscriberStatus
from newsletter.subscriptions import store, suppression
from newsletter.subscriptions.lists import ListRow, check_text, normalise_email


class HandoverError(ListImportError):
    """The handover cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class Handover:
    old: Subscriber
    new: Subscriber
    sectors: tuple[str, ...]


def _successor_address(session: Session, secret: bytes, email: str, old: Subscriber) -> str:
    try:
        address = normalise_email(email)
    except ValueError as exc:
        raise HandoverError(f"{email!r} is not a valid address: {exc}") from None
    if address == old.email:
        raise HandoverError("the old and the new address are the same")
    if suppression.is_suppressed(session, secret, address):
        raise suppression.SuppressedAddressError(address)
    if store.by_address(session, address) is not None:
        raise HandoverError(
            f"{address} is already on the list; change its sectors with `newsletter subscribers "
            "import`, or remove it first"
        )
    return address


def _earlier_handover(session: Session, old: Subscriber) -> None:
    """Refuse a second handover of the same post while the first successor is still listed.

    A second run (a retried script, a colleague doing it again) would give the post two
    successors, both mailed. A successor since erased (a typo removed) leaves the post free.
    """
    assert old.id is not None
    successor = session.exec(
        select(Subscriber)
        .where(Subscriber.consent_source == f"handover:{old.id}")
        .order_by(col(Subscriber.id))
    ).first()
    if successor is None or suppression.is_erased(successor):
        return
    raise HandoverError(
        f"{old.email} was already handed over on {successor.created_at:%Y-%m-%d} to "
        f"{successor.email} (subscriber #{successor.id}, {successor.status}); hand over from "
        f"{successor.email} if the post changed hands again, or remove {successor.email} first "
        "if it was a mistake"
    )


def handover(
    session: Session,
    secret: bytes,
    *,
    old_email: str,
    new_email: str,
    name: str = "",
    actor: Actor,
) -> Handover:
    """Create the successor (pending their confirmation) and retire the old address (no commit).

    Three writes (the successor, the old address unsubscribed, the audit entry) that stand or
    fall together: the caller commits them as one.
    """
    old = store.find(session, old_email)
    assert old.id is not None
    if suppression.is_erased(old):
        raise HandoverError(f"{old_email} was erased; nothing to hand over")
    _earlier_handover(session, old)
    address = _successor_address(session, secret, new_email, old)
    problem = check_text(name.strip(), "name")
    if problem:
        raise HandoverError(f"--name: {problem}")
    sectors = interests.sectors_of(session, [old.id]).get(old.id, ())
    row = ListRow(
        address, name.strip(), old.title, old.embassy_code, sectors, old.language, "handover", 0
    )
    new = store.create(
        session, row, status=SubscriberStatus.PENDING, actor=actor.label, via=actor.via,
        consent=f"handover:{old.id}", detail=f"successor of subscriber #{old.id}",
    )  # fmt: skip
    if old.status not in store.DEPARTED:
        store.set_status(
            session, old, SubscriberStatus.UNSUBSCRIBED, actor=actor.label, via=actor.via,
            detail=f"handed over to subscriber #{new.id}",
        )  # fmt: skip
    store.audit(
        session, old, "handover", actor=actor.label, via=actor.via,
        detail=f"post {old.title or '-'} ({old.embassy_code}) handed over to subscriber #{new.id}",
    )  # fmt: skip
    session.flush()
    return Handover(old, new, sectors)
