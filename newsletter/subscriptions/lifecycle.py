"""Lifecycle: pending -> active -> unsubscribed | bounced | complained, each step audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session

from newsletter.errors import NewsletterError
from newsletter.models import Subscriber, SubscriberStatus
from newsletter.subscriptions import store, suppression
from newsletter.subscriptions.lists import LANGUAGES
from newsletter.subscriptions.tokens import Claim, InvalidToken, Purpose, read_claim

S = SubscriberStatus
# Moves anyone may ask for; reaching `active` from a departed state needs a fresh confirmation
# (see `confirm`), never an import or a staff edit.
ALLOWED: dict[SubscriberStatus, frozenset[SubscriberStatus]] = {
    S.PENDING: frozenset({S.ACTIVE, S.UNSUBSCRIBED, S.BOUNCED, S.COMPLAINED}),
    S.ACTIVE: frozenset({S.UNSUBSCRIBED, S.BOUNCED, S.COMPLAINED}),
    S.UNSUBSCRIBED: frozenset({S.ACTIVE}),
    S.BOUNCED: frozenset({S.ACTIVE, S.UNSUBSCRIBED}),
    S.COMPLAINED: frozenset({S.ACTIVE}),
}


class TransitionError(NewsletterError, ValueError):
    def __init__(self, current: SubscriberStatus, wanted: SubscriberStatus) -> None:
        self.current = current
        self.wanted = wanted
        super().__init__(f"a subscriber who is {current} cannot become {wanted}")


class PreferencesError(NewsletterError, ValueError):
    """Chosen sectors or language are not offered."""


@dataclass(frozen=True)
class Actor:
    """Who made a change and through what: ("staff", "cli"), ("subscriber", "one-click"), ..."""

    who: str
    via: str


def change(
    session: Session,
    subscriber: Subscriber,
    to: SubscriberStatus,
    *,
    actor: Actor,
    detail: str = "",
) -> bool:
    """Apply an allowed transition (no commit); False when already there."""
    current = SubscriberStatus(subscriber.status)
    if current == to:
        return False
    if to not in ALLOWED[current]:
        raise TransitionError(current, to)
    return store.set_status(session, subscriber, to, actor=actor.who, via=actor.via, detail=detail)


def from_token(
    session: Session, secret: bytes, token: str, purpose: Purpose, *, now: dt.datetime
) -> tuple[Subscriber, Claim]:
    """The subscriber a link names; `InvalidToken` (one generic refusal) for anything else."""
    claim = read_claim(secret, token, purpose, now=now)
    subscriber = store.by_token_key(session, claim.token_key)
    if subscriber is None:
        raise InvalidToken
    return subscriber, claim


def check_confirmable(subscriber: Subscriber, claim: Claim) -> None:
    """`InvalidToken` unless this confirmation link may (still) confirm this subscriber.

    A link issued before the subscriber's last status change is stale: otherwise an old
    confirmation mail would undo a later unsubscribe.
    """
    if suppression.is_erased(subscriber):
        raise InvalidToken
    if subscriber.status in (S.PENDING, S.ACTIVE):
        return
    changed = subscriber.status_changed_at.replace(microsecond=0)
    if claim.issued is None or claim.issued < changed:
        raise InvalidToken


def confirm(session: Session, subscriber: Subscriber, claim: Claim, *, actor: Actor) -> bool:
    """Confirm (or, after leaving, renew) a subscription; False when it was already active."""
    check_confirmable(subscriber, claim)
    if subscriber.status == S.ACTIVE:
        return False
    detail = "confirmed" if subscriber.status == S.PENDING else "subscribed again"
    return change(session, subscriber, S.ACTIVE, actor=actor, detail=detail)


def unsubscribe(session: Session, subscriber: Subscriber, *, actor: Actor) -> bool:
    """Stop all mail to the subscriber; False when nothing changed (idempotent)."""
    if subscriber.status in (S.UNSUBSCRIBED, S.COMPLAINED):
        return False
    return change(session, subscriber, S.UNSUBSCRIBED, actor=actor)


def update_preferences(
    session: Session,
    subscriber: Subscriber,
    *,
    sectors: Sequence[str],
    language: str,
    offered: Sequence[str],
    actor: Actor,
) -> bool:
    """Set sectors and language (no commit); False when they were already so."""
    unknown = [code for code in sectors if code not in offered]
    if unknown or language not in LANGUAGES:
        raise PreferencesError(f"not offered: {', '.join(unknown) or language}")
    assert subscriber.id is not None
    codes = tuple(code for code in offered if code in sectors)
    current = store.sectors_of(session, [subscriber.id]).get(subscriber.id, ())
    if set(current) == set(codes) and subscriber.language == language:
        return False
    store.set_sectors(session, subscriber.id, codes)
    subscriber.language = language
    session.add(subscriber)
    detail = f"sectors: {', '.join(codes) or '-'}; language: {language}"
    store.audit(session, subscriber, "preferences", actor=actor.who, via=actor.via, detail=detail)
    return True
