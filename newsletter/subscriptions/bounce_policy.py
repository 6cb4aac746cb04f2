"""What bounces do to subscribers: hard ones disable at once, soft ones count to a threshold.

Only bounces of our own mail act: a report must return the Message-ID of a message the ledger
says we sent to the very address it names. Anyone can write a DSN; only we hold the key behind
our Message-IDs (see `mail.message.message_id`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlmodel import Session, col, select

from newsletter.actors import Actor
from newsletter.delivery.bounces import Bounce, BounceKind
from newsletter.errors import ConfigError
from newsletter.models import AuditEvent, Delivery, Subscriber, SubscriberStatus
from newsletter.subscriptions import lifecycle, suppression
from newsletter.subscriptions.lists import normalise_email
from newsletter.subscriptions.store import audit, by_address

DEFAULT_SOFT_THRESHOLD = 3
DEFAULT_SOFT_WINDOW = dt.timedelta(days=30)
SOFT_BOUNCE = "soft-bounce"  # AuditEvent.action of a counted soft bounce
ACTOR, VIA = "dsn", "bounce"
DSN = Actor.system(ACTOR, VIA)  # a delivery status notification
SMTP = Actor.system("smtp", VIA)  # a 5.1.x refusal at send time
NO_MESSAGE_OF_OURS = "no message of ours"
# The detail starts with what re-reading needs (the raw reason follows, and may hold anything).
_DETAIL = re.compile(r"report=(\S+) message=(\S+) campaign=\S+ date=(\S+) \|")


class Outcome(StrEnum):
    DISABLED = "disabled"  # the subscriber is now bounced
    COUNTED = "counted"  # a soft bounce recorded, below the threshold
    ALREADY = "already-bounced"  # bounced before: nothing to change
    INACTIVE = "inactive"  # unsubscribed or complained: nothing recorded
    DUPLICATE = "duplicate"  # this report was ingested before for this subscriber
    UNKNOWN = "unknown"  # no subscriber with this address
    NOT_OURS = "not-ours"  # about no message we sent to this address: forged or someone else's


@dataclass(frozen=True)
class Applied:
    bounce: Bounce
    outcome: Outcome
    email: str  # the subscriber's address as stored; "" when unknown
    reason: str = ""  # why nothing was done, for NOT_OURS


def record_smtp_bounce(
    session: Session, subscriber_id: int, detail: str, *, now: dt.datetime
) -> bool:
    """A 5.1.x refusal at send time: mark the subscriber bounced (no commit; the caller does).

    Only an active or pending subscriber becomes bounced, audited as actor "smtp" via "bounce";
    an unsubscribed, complained, erased or already bounced one is left as is. `now` (the
    sender's clock) dates the change. Returns whether the status changed.
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or not lifecycle.bounce(session, subscriber, actor=SMTP, detail=detail):
        return False
    subscriber.status_changed_at = now
    session.add(subscriber)
    return True


def apply_reports(
    session: Session,
    bounces: Sequence[Bounce],
    *,
    now: dt.datetime,
    soft_threshold: int = DEFAULT_SOFT_THRESHOLD,
    soft_window: dt.timedelta = DEFAULT_SOFT_WINDOW,
) -> list[Applied]:
    """One outcome per bounce, in order, in the caller's transaction (no commit).

    `now` dates a report that carries no date. A soft bounce disables when `soft_threshold`
    soft-bounced messages (not reports: a delay warning and the final failure of one message
    count once) fall within `soft_window`, counting since the subscriber's last status change.
    """
    if soft_threshold < 1:
        raise ConfigError(f"soft bounce threshold {soft_threshold}: use 1 or more")
    if soft_window <= dt.timedelta(0):
        raise ConfigError(f"soft bounce window {soft_window}: use a positive number of days")
    applied = [
        _apply(session, b, now=now, threshold=soft_threshold, window=soft_window) for b in bounces
    ]
    session.flush()
    return applied


def tally(applied: Sequence[Applied]) -> dict[str, int]:
    """Counts for the summary: hard, soft, disabled, counted, already, unknown, not ours."""
    outcomes = Counter(a.outcome for a in applied)
    kinds = Counter(a.bounce.kind for a in applied)
    already = outcomes[Outcome.ALREADY] + outcomes[Outcome.DUPLICATE] + outcomes[Outcome.INACTIVE]
    return {
        "hard": kinds[BounceKind.HARD], "soft": kinds[BounceKind.SOFT],
        "disabled": outcomes[Outcome.DISABLED], "counted": outcomes[Outcome.COUNTED],
        "already": already, "unknown": outcomes[Outcome.UNKNOWN],
        "not_ours": outcomes[Outcome.NOT_OURS],
    }  # fmt: skip


def _apply(
    session: Session, bounce: Bounce, *, now: dt.datetime, threshold: int, window: dt.timedelta
) -> Applied:
    subscriber, why = _sent_to(session, bounce)
    if subscriber is None or subscriber.id is None:
        return Applied(bounce, Outcome.NOT_OURS, "", why)
    if suppression.is_erased(subscriber):
        return Applied(bounce, Outcome.INACTIVE, "")
    history = _history(session, subscriber.id)
    if bounce.report_id in _reports(history):
        return Applied(bounce, Outcome.DUPLICATE, subscriber.email)
    if subscriber.status == SubscriberStatus.BOUNCED:
        return Applied(bounce, Outcome.ALREADY, subscriber.email)
    if subscriber.status not in lifecycle.BOUNCEABLE:
        return Applied(bounce, Outcome.INACTIVE, subscriber.email)
    detail = _detail(bounce, bounce.date or now)
    if bounce.kind is BounceKind.HARD:
        _disable(session, subscriber, detail)
        return Applied(bounce, Outcome.DISABLED, subscriber.email)
    audit(session, subscriber, SOFT_BOUNCE, old=str(subscriber.status), actor=ACTOR, via=VIA,
          detail=detail)  # fmt: skip
    session.flush()
    dates = _soft_bounce_dates(_history(session, subscriber.id))
    if not _reaches(dates, threshold, window):
        return Applied(bounce, Outcome.COUNTED, subscriber.email)
    days = window.total_seconds() / 86400
    _disable(session, subscriber, f"{detail} ({threshold} soft bounces within {days:g} days)")
    return Applied(bounce, Outcome.DISABLED, subscriber.email)


def _sent_to(session: Session, bounce: Bounce) -> tuple[Subscriber | None, str]:
    """The subscriber the ledger says we sent the returned message to, if the report names them;
    else None and why the report is not about our mail."""
    if bounce.delivery is not None:  # a return path we signed names the row: no guessing
        sent = select(Delivery.subscriber_id).where(
            Delivery.campaign_id == bounce.delivery.campaign_id,
            Delivery.subscriber_id == bounce.delivery.subscriber_id,
        )
        subscriber_id = session.exec(sent).first()
        found = session.get(Subscriber, subscriber_id) if subscriber_id is not None else None
        return found, "" if found is not None else NO_MESSAGE_OF_OURS
    if bounce.campaign_id is None or not bounce.message_id:
        return None, NO_MESSAGE_OF_OURS  # no Message-ID of ours (at our domain) returned
    ours = (Delivery.campaign_id == bounce.campaign_id, Delivery.message_id == bounce.message_id)
    for address in dict.fromkeys((bounce.recipient, bounce.final_recipient)):
        subscriber = by_address(session, _normalised(address))
        if subscriber is None or subscriber.id is None:
            continue
        row = select(Delivery.id).where(Delivery.subscriber_id == subscriber.id, *ours)
        if session.exec(row).first() is not None:
            return subscriber, ""
    # Not sent to an address the report names; an erased subscriber's row has lost its address
    # but keeps its id, and the person's erasure is what the report must not undo.
    subscriber_ids = session.exec(select(Delivery.subscriber_id).where(*ours)).all()
    if not subscriber_ids:
        return None, NO_MESSAGE_OF_OURS
    for subscriber_id in subscriber_ids:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is not None and suppression.is_erased(subscriber):
            return subscriber, ""
    # Our message, but the report names someone else: a forward that lost the address we sent
    # to, or a forgery by someone who saw the message. Neither says our recipient's box fails.
    return None, f"{NO_MESSAGE_OF_OURS} to {bounce.recipient}"


def _normalised(address: str) -> str:
    try:
        return normalise_email(address)
    except ValueError:
        return ""


def _disable(session: Session, subscriber: Subscriber, detail: str) -> None:
    lifecycle.bounce(session, subscriber, actor=DSN, detail=detail)


def _detail(bounce: Bounce, date: dt.datetime) -> str:
    campaign = "-" if bounce.campaign_id is None else str(bounce.campaign_id)
    return (
        f"report={bounce.report_id} message={bounce.message_id or '-'} campaign={campaign} "
        f"date={date.astimezone(dt.UTC).isoformat()} | {bounce.kind} {bounce.status} "
        f"{bounce.diagnostic}"
    ).strip()


def _reports(history: Sequence[AuditEvent]) -> set[str]:
    return {m.group(1) for e in history if e.via == VIA and (m := _DETAIL.match(e.detail))}


def _history(session: Session, subscriber_id: int) -> Sequence[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.subscriber_id == subscriber_id)
    return session.exec(query.order_by(col(AuditEvent.id))).all()


def _soft_bounce_dates(history: Sequence[AuditEvent]) -> list[dt.datetime]:
    """One date per soft-bounced message, since the last status change (ids order the log)."""
    since = max((e.id or 0 for e in history if e.action == "status"), default=0)
    first: dict[str, dt.datetime] = {}
    for event in history:
        match = _DETAIL.match(event.detail)
        if event.action != SOFT_BOUNCE or (event.id or 0) <= since or match is None:
            continue
        report, message, when = match.groups()
        key = report if message == "-" else message
        try:
            date = dt.datetime.fromisoformat(when)
        except ValueError:
            continue
        first[key] = min(first.get(key, date), date)
    return sorted(first.values())


def _reaches(dates: Sequence[dt.datetime], threshold: int, window: dt.timedelta) -> bool:
    """Whether `threshold` of the sorted dates fit within `window`, whatever order they came in."""
    return any(
        dates[i + threshold - 1] - dates[i] <= window for i in range(len(dates) - threshold + 1)
    )


@dataclass(frozen=True)
class Undone:
    """One subscriber an un-bounce was asked for: the status they returned to, or why not."""

    email: str
    status: str = ""  # "active" or "pending"; "" when refused
    refused: str = ""


def bounced_since(session: Session, since: dt.datetime, *, matching: str = "") -> list[Subscriber]:
    """Bounced subscribers whose bounce came at or after `since` (not erased ones), by address.

    `matching`: only those whose bounce's recorded reason contains this text (any case), so a
    relay's blanket refusal can be undone without undoing the genuine bounces of that time.
    """
    query = (
        select(Subscriber)
        .where(
            Subscriber.status == SubscriberStatus.BOUNCED,
            col(Subscriber.status_changed_at) >= since,
            col(Subscriber.email).not_like(suppression.erased_pattern()),
        )
        .order_by(col(Subscriber.email))
    )
    found = list(session.exec(query).all())
    if not matching:
        return found
    wanted = matching.casefold()
    return [s for s in found if wanted in _bounce_detail(session, s).casefold()]


def _bounce_detail(session: Session, subscriber: Subscriber) -> str:
    assert subscriber.id is not None
    query = (
        select(AuditEvent.detail)
        .where(
            AuditEvent.subscriber_id == subscriber.id,
            AuditEvent.action == "status",
            AuditEvent.new_status == str(SubscriberStatus.BOUNCED),
        )
        .order_by(col(AuditEvent.id).desc())
    )
    return session.exec(query).first() or ""


def undo_bounces(
    session: Session,
    secret: bytes,
    *,
    emails: Sequence[str] = (),
    since: dt.datetime | None = None,
    matching: str = "",
    reason: str,
    actor: Actor,
    by: str = "",
) -> list[Undone]:
    """Return wrongly bounced subscribers to where they were, audited (no commit).

    The named `emails` (each refused with the reason when not bounced, unknown, erased or
    suppressed), then everyone `bounced_since(since, matching=...)`. A dry run rolls back.
    """
    why = lifecycle.unbounce_reason(reason)  # before anything: no reason, no change
    done: list[Undone] = []
    seen: set[int] = set()
    targets: list[tuple[str, Subscriber | None]] = [
        (e, by_address(session, _normalised(e))) for e in emails
    ]
    if since is not None:
        targets += [(s.email, s) for s in bounced_since(session, since, matching=matching)]
    for asked, subscriber in targets:
        if subscriber is None or subscriber.id is None:
            done.append(Undone(asked, refused=_missing(session, secret, asked)))
            continue
        if subscriber.id in seen:
            continue
        seen.add(subscriber.id)
        try:
            status = lifecycle.unbounce(session, secret, subscriber, actor=actor, reason=why, by=by)
        except lifecycle.UnbounceError as exc:
            done.append(Undone(subscriber.email, refused=str(exc)))
            continue
        done.append(Undone(subscriber.email, status=str(status)))
    session.flush()
    return done


def _missing(session: Session, secret: bytes, address: str) -> str:
    normalised = _normalised(address)
    if normalised and suppression.is_suppressed(session, secret, normalised):
        return f"{normalised} was erased or is on the suppression list; it stays so"
    return f"no subscriber {normalised or address!r}; see `newsletter subscribers list`"
