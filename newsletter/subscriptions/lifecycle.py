"""Lifecycle: pending -> [awaiting_approval ->] active -> unsubscribed | bounced | complained,
each step audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlmodel import Session

from newsletter import interests
from newsletter.actors import Actor as Actor  # re-exported: callers name it from here
from newsletter.errors import NewsletterError
from newsletter.models import Subscriber, SubscriberStatus
from newsletter.states import ALLOWED as ALLOWED  # re-exported: the table lives with the others
from newsletter.states import BOUNCEABLE as BOUNCEABLE
from newsletter.subscriptions import store, suppression
from newsletter.subscriptions.lists import LANGUAGES
from newsletter.subscriptions.reasons import audit_reason
from newsletter.tokens import Claim, InvalidToken, Purpose, read_claim

S = SubscriberStatus


class TransitionError(NewsletterError, ValueError):
    def __init__(self, current: SubscriberStatus, wanted: SubscriberStatus) -> None:
        self.current = current
        self.wanted = wanted
        super().__init__(f"a subscriber who is {current} cannot become {wanted}")


class UnbounceError(NewsletterError, ValueError):
    """A subscriber cannot be un-bounced: not bounced, erased, suppressed, or no reason given."""


class PreferencesError(NewsletterError, ValueError):
    """Chosen sectors or language are not offered."""


class ApprovalError(NewsletterError, ValueError):
    """Only a sign-up awaiting approval can be approved or rejected."""


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
    return store.set_status(
        session, subscriber, to, actor=actor.label, via=actor.via, detail=detail
    )


def bounce(session: Session, subscriber: Subscriber, *, actor: Actor, detail: str = "") -> bool:
    """Mark an active or pending subscriber bounced (no commit); False, nothing written, else."""
    if subscriber.status not in BOUNCEABLE or suppression.is_erased(subscriber):
        return False
    return change(session, subscriber, S.BOUNCED, actor=actor, detail=detail)


def unbounce_reason(reason: str) -> str:
    """The reason staff give for an un-bounce, checked: it is the audit's answer to "why"."""
    return audit_reason(
        reason, error=UnbounceError,
        missing="give a --reason: the audit log records why a bounce was undone",
    )  # fmt: skip


def unbounce(
    session: Session,
    secret: bytes,
    subscriber: Subscriber,
    *,
    actor: Actor,
    reason: str,
    by: str = "",
) -> SubscriberStatus:
    """Undo a wrong bounce (no commit): the status the subscriber returns to.

    Not a re-subscription (which needs a fresh confirmation, see `confirm`): staff correct a
    fault of the mail system (a relay answering "user unknown" for everyone), so the person
    returns to where they were before it, active, or pending if they never confirmed. This is
    the one staff edit that may leave `bounced`, and only to those two states.

    `UnbounceError` when the subscriber is not bounced, was erased, or their address is on the
    suppression list: an un-bounce never brings back someone who asked to be forgotten.
    """
    why = unbounce_reason(reason)
    if suppression.is_erased(subscriber) or suppression.is_suppressed(
        session, secret, subscriber.email
    ):
        raise UnbounceError(
            f"{subscriber.email} was erased or is on the suppression list; it stays so"
        )
    if subscriber.status != S.BOUNCED:
        raise UnbounceError(
            f"{subscriber.email} is {subscriber.status}, not bounced: only bounced subscribers "
            "can be un-bounced"
        )
    to = _before_bounce(session, subscriber)
    detail = f"bounce undone{f' by {by}' if by else ''}: {why}"
    store.set_status(session, subscriber, to, actor=actor.label, via=actor.via, detail=detail)
    return to


def _before_bounce(session: Session, subscriber: Subscriber) -> SubscriberStatus:
    assert subscriber.id is not None
    for event in reversed(store.history(session, subscriber.id)):
        if event.action == "status" and event.new_status == S.BOUNCED:
            if event.old_status in BOUNCEABLE:
                return S(event.old_status)
            break
    # Created bounced (a list said so): confirmed_at is set once a subscription became active;
    # without it the person never confirmed, and an un-bounce must not skip that.
    return S.ACTIVE if subscriber.confirmed_at is not None else S.PENDING


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
    if subscriber.status in (S.PENDING, S.ACTIVE, S.AWAITING):
        return
    changed = subscriber.status_changed_at.replace(microsecond=0)
    if claim.issued is None or claim.issued < changed:
        raise InvalidToken


def confirm(
    session: Session, subscriber: Subscriber, claim: Claim, *, actor: Actor, approval: bool = False
) -> bool:
    """Confirm (or, after leaving, renew) a subscription; False when it was already confirmed.

    With `approval` the confirmed subscription awaits a list manager's `approve`.
    """
    check_confirmable(subscriber, claim)
    if subscriber.status in (S.ACTIVE, S.AWAITING):
        return False
    detail = "confirmed" if subscriber.status == S.PENDING else "subscribed again"
    to = S.AWAITING if approval else S.ACTIVE
    return change(session, subscriber, to, actor=actor, detail=detail)


def _awaiting(subscriber: Subscriber, verb: str) -> None:
    if subscriber.status != S.AWAITING or suppression.is_erased(subscriber):
        raise ApprovalError(
            f"{subscriber.email} is {subscriber.status}, not awaiting approval: only a confirmed "
            f"web sign-up can be {verb}; see `newsletter subscribers pending`"
        )


def approve(session: Session, subscriber: Subscriber, *, actor: Actor) -> bool:
    """Let a confirmed sign-up in (no commit); False when it was approved already."""
    if subscriber.status == S.ACTIVE:
        return False
    _awaiting(subscriber, "approved")
    return change(session, subscriber, S.ACTIVE, actor=actor, detail="sign-up approved")


def reject(session: Session, subscriber: Subscriber, *, actor: Actor, reason: str = "") -> bool:
    """Refuse a confirmed sign-up (no commit): it ends unsubscribed, with the reason audited."""
    _awaiting(subscriber, "rejected")
    why = " ".join(reason.split())
    detail = f"sign-up rejected: {why}" if why else "sign-up rejected"
    return change(session, subscriber, S.UNSUBSCRIBED, actor=actor, detail=detail)


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
    current = interests.sectors_of(session, [subscriber.id]).get(subscriber.id, ())
    if set(current) == set(codes) and subscriber.language == language:
        return False
    store.set_sectors(session, subscriber.id, codes)
    subscriber.language = language
    session.add(subscriber)
    detail = f"sectors: {', '.join(codes) or '-'}; language: {language}"
    store.audit(session, subscriber, "preferences", actor=actor.label, via=actor.via, detail=detail)
    return True
