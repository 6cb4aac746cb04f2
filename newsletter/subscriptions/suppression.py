"""The suppression list: erased or blocked addresses, kept only as keyed hashes."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from sqlmodel import Session, col, select

from newsletter.errors import ListImportError
from newsletter.models import Subscriber, Suppression

# Erased rows keep their id (the delivery ledger points at it) under an address in the
# reserved `.invalid` domain (RFC 2606), which address validation never accepts from a list.
ERASED_PREFIX = "erased-"
ERASED_DOMAIN = "invalid"


class SuppressedAddressError(ListImportError):
    """The address was erased at the person's request (or blocked) and may not be added again."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(
            f"{address} is on the suppression list (erased at the person's request); "
            "it cannot be added again unless the suppression is lifted (a mistake, or the "
            f"person asked to come back): `newsletter subscribers unsuppress {address} --reason ...`"
        )


def address_hash(secret: bytes, address: str) -> str:
    """A keyed hash of a normalised address: without the secret it names nobody."""
    return hmac.new(secret, b"suppress\x00" + address.encode(), hashlib.sha256).hexdigest()


def erased_address(subscriber_id: int) -> str:
    return f"{ERASED_PREFIX}{subscriber_id}@{ERASED_DOMAIN}"


def is_erased(subscriber: Subscriber) -> bool:
    return subscriber.email.startswith(ERASED_PREFIX) and subscriber.email.endswith(
        "@" + ERASED_DOMAIN
    )


def erased_pattern() -> str:
    """A SQL LIKE pattern matching every erased row's placeholder address."""
    return f"{ERASED_PREFIX}%@{ERASED_DOMAIN}"


def suppress(session: Session, secret: bytes, address: str, *, reason: str) -> bool:
    """Add a normalised address to the list (no commit); False when it was already there."""
    digest = address_hash(secret, address)
    if session.get(Suppression, digest) is not None:
        return False
    session.add(Suppression(email_hash=digest, reason=reason))
    return True


def lift(session: Session, secret: bytes, address: str) -> Suppression | None:
    """Take a normalised address off the list (no commit): the entry removed, None if absent."""
    entry = session.get(Suppression, address_hash(secret, address))
    if entry is not None:
        session.delete(entry)
    return entry


def suppressed(session: Session, secret: bytes, addresses: Iterable[str]) -> set[str]:
    """Those of the normalised `addresses` that are on the suppression list."""
    by_hash = {address_hash(secret, a): a for a in addresses}
    found: set[str] = set()
    digests = list(by_hash)
    for start in range(0, len(digests), 500):
        chunk = digests[start : start + 500]
        rows = session.exec(
            select(Suppression.email_hash).where(col(Suppression.email_hash).in_(chunk))
        ).all()
        found.update(by_hash[d] for d in rows)
    return found


def is_suppressed(session: Session, secret: bytes, address: str) -> bool:
    return session.get(Suppression, address_hash(secret, address)) is not None


def has_entries(session: Session) -> bool:
    return session.exec(select(Suppression.email_hash).limit(1)).first() is not None
