"""Subscribers' delivery modes in the database: read them, change them (audited)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, col, select

from newsletter.models import Subscriber
from newsletter.scheduling.cadence import Cadence, stored
from newsletter.subscriptions import store


def cadence_of(subscriber: Subscriber) -> Cadence:
    return stored(subscriber.delivery_mode, subscriber.mode_weekday, subscriber.paused_until)


def cadences(session: Session, subscriber_ids: Iterable[int]) -> dict[int, Cadence]:
    ids = list(subscriber_ids)
    out: dict[int, Cadence] = {}
    for start in range(0, len(ids), 500):
        query = select(Subscriber).where(col(Subscriber.id).in_(ids[start : start + 500]))
        for row in session.exec(query):
            if row.id is not None:
                out[row.id] = cadence_of(row)
    return out


def set_cadence(
    session: Session,
    subscriber: Subscriber,
    cadence: Cadence,
    *,
    actor: str,
    via: str,
) -> Cadence:
    """Store a new mode (no commit) and audit the change; returns the mode it replaced."""
    old = cadence_of(subscriber)
    subscriber.delivery_mode = str(cadence.mode)
    subscriber.mode_weekday = cadence.weekday
    subscriber.paused_until = cadence.paused_until
    session.add(subscriber)
    session.flush()
    store.audit(
        session, subscriber, "mode_changed", actor=actor, via=via,
        detail=f"{old.describe()} -> {cadence.describe()}",
    )  # fmt: skip
    return old
