"""Sending an issue, and what one subscriber would get (preview, explain).

`send_issue` is what `newsletter send`, `newsletter demo`, the tests and the benchmark run:
prepare the campaign (every active subscriber in its ledger), then the engine sends the rows
due. `send_campaign_rows` is the engine alone, as a worker runs it on a prepared campaign.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

from newsletter import interests, runtime
from newsletter.actors import Actor, Scope
from newsletter.config import DeliverySettings, Settings
from newsletter.db import Engine, Session
from newsletter.delivery.campaigns import counts, open_campaign, prepare_send
from newsletter.delivery.compose import IssueContext, RecipientData, personalised, tailored
from newsletter.delivery.engine import SendEngine, SendReport
from newsletter.delivery.locks import SenderLock
from newsletter.delivery.transports import Transport
from newsletter.errors import NotFoundError
from newsletter.issues import get_issue
from newsletter.models import utcnow
from newsletter.services.signals import run_until_signal
from newsletter.services.units import database
from newsletter.states import LIVE
from newsletter.subscriptions import store
from newsletter.subscriptions.bounce_policy import record_smtp_bounce

log = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Prepared:
    """A campaign ready to send: its id, the rows waiting, and how many were just added."""

    campaign: int
    pending: int
    added: int


def _transport(
    settings: Settings, transport: Transport | str | None, outbox: Path | None
) -> Transport:
    if transport is None or isinstance(transport, str):
        return runtime.make_transport(settings, transport, outbox)
    return transport


def prepare_campaign(
    settings: Settings,
    slug: str,
    *,
    actor: Actor,
    db: Engine | None = None,
    resend_unknown: bool = False,
) -> Prepared:
    """Open (or reopen) the issue's campaign with every active subscriber in its ledger.

    `actor` is who asked; the campaign does not record it yet (`send_issue` logs it).
    """
    with database(settings, db) as engine, Session(engine, expire_on_commit=False) as session:
        stored = get_issue(session, slug)
        campaign, added = prepare_send(session, stored.record, resend_unknown=resend_unknown)
        assert campaign.id is not None
        by_state = counts(session, campaign.id)
        session.commit()
    pending = sum(by_state.get(state, 0) for state in LIVE)  # what the progress bar counts
    return Prepared(campaign.id, pending, added)


class EngineOptions(TypedDict, total=False):
    """How the engine sends, the same for `send_issue` and `send_campaign_rows`.

    `transport`: a built one, or by name (file, smtp, null; absent or None: the configured one),
    with `outbox` for the file transport. `progress` is told how many rows were sent (or failed)
    since it was last told. `delivery` overrides the configured delivery settings, `helper` the
    choice of a composing helper process (None: by campaign size). `signals`: SIGINT and SIGTERM
    set `stop`, so what is on the wire is recorded before exit.
    """

    transport: Transport | str | None
    outbox: Path | None
    clock: Clock
    rng: random.Random | None
    progress: Progress | None
    stop: asyncio.Event | None
    delivery: DeliverySettings | None
    helper: bool | None
    worker: str | None
    signals: bool


def send_campaign_rows(
    settings: Settings, slug: str, *, db: Engine | None = None, **options: Unpack[EngineOptions]
) -> SendReport:
    """Send the rows of the issue's campaign that are due, as a worker does (no preparing)."""
    with database(settings, db) as engine:
        with Session(engine, expire_on_commit=False) as session:
            campaign, _ = open_campaign(session, get_issue(session, slug).record)
            assert campaign.id is not None
            context = runtime.issue_context(session, settings, slug)
            session.commit()
        sender = SendEngine(
            db=engine, context=context,
            transport=_transport(settings, options.get("transport"), options.get("outbox")),
            delivery=options.get("delivery") or settings.delivery, bounced=record_smtp_bounce,
            clock=options.get("clock", utcnow), rng=options.get("rng"),
            progress=options.get("progress"), stop=options.get("stop"),
            worker=options.get("worker"), helper=options.get("helper"),
        )  # fmt: skip
        work = sender.run(campaign.id)
        if options.get("signals", False):
            return run_until_signal(work, sender.stop)
        return asyncio.run(work)


def send_issue(
    settings: Settings,
    slug: str,
    *,
    actor: Actor,
    db: Engine | None = None,
    on_pending: Progress | None = None,
    resend_unknown: bool = False,
    **options: Unpack[EngineOptions],
) -> SendReport:
    """Send an issue to every active subscriber not yet sent it (running it again never resends).

    Prepares the campaign, then sends as `send_campaign_rows` does (see `EngineOptions`), with
    the sender lock held throughout. `on_pending` is told how many rows wait before the first
    goes out.
    """
    with database(settings, db) as engine, SenderLock(engine):
        prepared = prepare_campaign(
            settings, slug, actor=actor, db=engine, resend_unknown=resend_unknown
        )
        log.info(
            "%s (via %s) sends %s: campaign %s, %d rows waiting",
            actor.label, actor.via, slug, prepared.campaign, prepared.pending,
        )  # fmt: skip
        if on_pending is not None:
            on_pending(prepared.pending)
        return send_campaign_rows(settings, slug, db=engine, **options)


# --- what one subscriber gets ------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    item: str
    section: str
    included: bool
    reason: str
    reason_code: str
    matched: tuple[str, ...]


@dataclass(frozen=True)
class Explanation:
    email: str
    interests: tuple[str, ...]  # empty: the whole issue
    decisions: tuple[Decision, ...]


@dataclass(frozen=True)
class Preview:
    email: str
    subject: str
    html: str
    text: str


def _recipient(session: Session, email: str, scope: Scope) -> RecipientData:
    subscriber = store.find(session, email)
    if not scope.allows(subscriber.embassy_code):
        # Outside the actor's missions a person is not there at all, not "forbidden".
        raise NotFoundError("subscriber", subscriber.email, "see `newsletter subscribers list`")
    assert subscriber.id is not None
    return RecipientData(
        subscriber_id=subscriber.id, email=subscriber.email, name=subscriber.name,
        language=subscriber.language, embassy=subscriber.embassy_code,
        sectors=interests.sectors_of(session, [subscriber.id]).get(subscriber.id, ()),
        token_key=subscriber.token_key,
    )  # fmt: skip


def _context_and_recipient(
    settings: Settings, slug: str, email: str, scope: Scope, db: Engine | None
) -> tuple[IssueContext, RecipientData]:
    with database(settings, db) as engine, Session(engine, expire_on_commit=False) as session:
        return runtime.issue_context(session, settings, slug), _recipient(session, email, scope)


def explain_digest(
    settings: Settings,
    slug: str,
    email: str,
    *,
    scope: Scope,
    db: Engine | None = None,
) -> Explanation:
    """Why each item of an issue is in or out of one subscriber's digest."""
    context, recipient = _context_and_recipient(settings, slug, email, scope, db)
    selection, _, _ = tailored(context, recipient)
    decisions = tuple(
        Decision(
            str(d.item_id), d.section, d.included, d.explain(), d.reason.value, tuple(d.matched)
        )
        for d in selection.decisions
    )
    return Explanation(recipient.email, tuple(sorted(selection.interests)), decisions)


def preview_digest(
    settings: Settings,
    slug: str,
    email: str,
    *,
    scope: Scope,
    db: Engine | None = None,
) -> Preview:
    """The digest one subscriber would get, personalised (their own links), not sent."""
    context, recipient = _context_and_recipient(settings, slug, email, scope, db)
    _, digest = personalised(context, recipient)
    return Preview(recipient.email, digest.subject, digest.html, digest.text)
