"""Posts outlive people: hand a subscriber's post (sectors, language) to their successor."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

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
