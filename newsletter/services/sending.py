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
from typing import TypedDict, Unpack, cast

from newsletter import interests, runtime
from newsletter.actors import Actor, Scope
from newsletter.config import DeliverySettings, Settings
from newsletter.db import Engine, Session
from newsletter.delivery.campaigns import counts, open_campaign, prepare_send
from newsletter.delivery.compose import IssueContext, RecipientData, personalised, tailored
from newsletter.delivery.engine import SendEngine, SendReport
from newsletter.delivery.locks import SenderBusyError, SenderLock
from newsletter.delivery.send_facts import (
    CampaignFacts,
    campaign_facts,
    end_rehearsal,
    live_rows,
    note_transport,
    open_rehearsal,
)
from newsletter.delivery.transports import Transport
from newsletter.errors import DeliveryError, NotFoundError
from newsletter.issues import get_issue
from newsletter.models import CampaignState, DeliveryState, utcnow
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
    rehearsal: bool = False


@dataclass(frozen=True)
class Route:
    """Where a send's mail goes: the transport by name, and its outbox, server or nowhere.

    A send through `file` or `null` on an instance that sends by `smtp` is a rehearsal: it
    gets a campaign of its own, so the real send later still goes to everyone.
    """

    transport: str
    destination: str
    rehearsal: bool

    @property
    def described(self) -> str:
        kind = "a rehearsal (not a delivery)" if self.rehearsal else "sending"
        return f"{kind} through the {self.transport} transport: {self.destination}"


def route(settings: Settings, transport: str | None = None, outbox: Path | None = None) -> Route:
    """Where mail sent through `transport` (None: the configured one) goes."""
    chosen = transport or settings.transport
    if chosen == "file":
        where = f"one .eml per message into {(outbox or settings.path(settings.outbox)).resolve()}"
    elif chosen == "smtp":
        where = f"SMTP server {settings.smtp.host}:{settings.smtp.port}"
    else:
        where = "nowhere (every message discarded)"
    rehearsal = settings.transport == "smtp" and chosen in ("file", "null")
    return Route(chosen, where, rehearsal)


def _transport(
    settings: Settings, transport: Transport | str | None, outbox: Path | None
) -> Transport:
    if transport is None or isinstance(transport, str):
        return runtime.make_transport(settings, transport, outbox)
    return transport


def _is_rehearsal(settings: Settings, transport: Transport | str | None) -> bool:
    # Only a transport chosen by name is the door's choice; a built one is the caller's own.
    return isinstance(transport, str) and route(settings, transport).rehearsal


def prepare_campaign(
    settings: Settings,
    slug: str,
    *,
    actor: Actor,
    db: Engine | None = None,
    resend_unknown: bool = False,
    rehearsal: str | None = None,
) -> Prepared:
    """Open (or reopen) the issue's campaign with every active subscriber in its ledger.

    `rehearsal`: the transport of a rehearsal, which opens a campaign of its own instead.
    `actor` is who asked; the campaign does not record it yet (`send_issue` logs it).
    """
    with database(settings, db) as engine, Session(engine, expire_on_commit=False) as session:
        stored = get_issue(session, slug)
        if rehearsal:
            campaign = open_rehearsal(session, stored.record, rehearsal)
            added = 0
        else:
            campaign, added = prepare_send(session, stored.record, resend_unknown=resend_unknown)
        assert campaign.id is not None
        by_state = counts(session, campaign.id)
        session.commit()
    pending = sum(by_state.get(state, 0) for state in LIVE)  # what the progress bar counts
    return Prepared(campaign.id, pending, added, rehearsal=bool(rehearsal))


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
    settings: Settings,
    slug: str,
    *,
    db: Engine | None = None,
    campaign: int | None = None,
    **options: Unpack[EngineOptions],
) -> SendReport:
    """Send the rows of the issue's campaign that are due, as a worker does (no preparing).

    `campaign`: that campaign of the issue (a rehearsal), not the one a real send continues.
    """
    with database(settings, db) as engine:
        sender_transport = _transport(settings, options.get("transport"), options.get("outbox"))
        with Session(engine, expire_on_commit=False) as session:
            if campaign is None:
                campaign = open_campaign(session, get_issue(session, slug).record)[0].id
            assert campaign is not None
            context = runtime.issue_context(session, settings, slug)
            session.commit()
        sender = SendEngine(
            db=engine, context=context, transport=sender_transport,
            delivery=options.get("delivery") or settings.delivery, bounced=record_smtp_bounce,
            clock=options.get("clock", utcnow), rng=options.get("rng"),
            progress=options.get("progress"), stop=options.get("stop"),
            worker=options.get("worker"), helper=options.get("helper"),
        )  # fmt: skip
        work = sender.run(campaign)
        if options.get("signals", False):
            report = run_until_signal(work, sender.stop)
        else:
            report = asyncio.run(work)
        if report.sent:
            with Session(engine) as session:
                note_transport(session, campaign, sender_transport.name)
                session.commit()
        return report


def send_issue(
    settings: Settings,
    slug: str,
    *,
    actor: Actor,
    db: Engine | None = None,
    on_pending: Progress | None = None,
    on_prepared: Callable[[Prepared], None] | None = None,
    resend_unknown: bool = False,
    **options: Unpack[EngineOptions],
) -> SendReport:
    """Send an issue to every active subscriber not yet sent it (running it again never resends).

    Prepares the campaign, then sends as `send_campaign_rows` does (see `EngineOptions`), with
    the sender lock held throughout. `on_pending` is told how many rows wait before the first
    goes out (`on_prepared`: the whole `Prepared`). A `file` or `null` transport chosen by
    name on an `smtp` instance is a rehearsal (see `Route`). `SenderBusyError` while another
    process sends on this SQLite database (`send_or_hand_off` gives it the campaign instead).
    """
    chosen = options.get("transport")
    by_name = chosen is None or isinstance(chosen, str)  # a built transport is the caller's
    if by_name and route(settings, cast(str | None, chosen)).transport == "smtp":
        # Before the campaign is opened: a refusal leaves nothing to undo.
        runtime.require_sendable(settings)
    rehearsal = _is_rehearsal(settings, chosen)
    with database(settings, db) as engine, SenderLock(engine):
        prepared = prepare_campaign(
            settings, slug, actor=actor, db=engine, resend_unknown=resend_unknown,
            rehearsal=str(options.get("transport")) if rehearsal else None,
        )  # fmt: skip
        log.info(
            "%s (via %s) %s %s: campaign %s, %d rows waiting",
            actor.label, actor.via, "rehearses" if rehearsal else "sends", slug,
            prepared.campaign, prepared.pending,
        )  # fmt: skip
        if on_pending is not None:
            on_pending(prepared.pending)
        if on_prepared is not None:
            on_prepared(prepared)
        try:
            return send_campaign_rows(
                settings, slug, db=engine, campaign=prepared.campaign, **options
            )
        finally:
            if rehearsal:
                with Session(engine) as session:
                    end_rehearsal(session, prepared.campaign)
                    session.commit()


@dataclass(frozen=True)
class HandedOff:
    """`send` found another sender on this SQLite database and queued the campaign for it."""

    prepared: Prepared
    holder: str  # who holds the sender lock, as its lock file says


@dataclass(frozen=True)
class SendOutcome:
    """What `send_or_hand_off` did: sent (`report`), or handed the campaign to a running sender."""

    route: Route
    report: SendReport | None = None
    handed_off: HandedOff | None = None
    prepared: Prepared | None = None


def send_or_hand_off(
    settings: Settings,
    slug: str,
    *,
    actor: Actor,
    db: Engine | None = None,
    on_pending: Progress | None = None,
    resend_unknown: bool = False,
    **options: Unpack[EngineOptions],
) -> SendOutcome:
    """`send_issue`, or, while another process (`newsletter run`, a worker) holds the sender
    lock of this SQLite database, the campaign prepared and left to that sender, which takes
    up every sending campaign. A rehearsal, or a transport other than the configured one, is
    not handed off: the running sender would send it for real, through its own transport.
    """
    chosen = options.get("transport")
    name = chosen if isinstance(chosen, str) or chosen is None else chosen.name
    path = route(settings, name, options.get("outbox"))
    prepared: list[Prepared] = []
    with database(settings, db) as engine:
        try:
            report = send_issue(
                settings, slug, actor=actor, db=engine, on_pending=on_pending,
                on_prepared=prepared.append, resend_unknown=resend_unknown, **options,
            )  # fmt: skip
            return SendOutcome(path, report=report, prepared=prepared[0] if prepared else None)
        except SenderBusyError as busy:
            if path.rehearsal or path.transport != settings.transport:
                raise SenderBusyError(
                    busy.lock,
                    f"a send through the {path.transport} transport needs the sender itself; "
                    "stop that process first, or send through the configured "
                    f"{settings.transport} transport (it takes the campaign over)",
                ) from None
            handed = prepare_campaign(
                settings, slug, actor=actor, db=engine, resend_unknown=resend_unknown
            )
            log.info(
                "%s (via %s) hands %s to the running sender: campaign %s, %d rows waiting",
                actor.label, actor.via, slug, handed.campaign, handed.pending,
            )  # fmt: skip
            return SendOutcome(path, handed_off=HandedOff(handed, busy.holder), prepared=handed)


class SendPausedError(DeliveryError):
    """The send stopped with its campaign paused: the reason, and what to do next."""

    def __init__(self, report: SendReport, slug: str) -> None:
        self.report = report
        super().__init__(
            f"campaign {report.campaign} of {slug} paused: {report.reason or 'no reason given'}; "
            f"{report.sent} sent before it stopped. Fix the cause, then "
            f"`newsletter campaign resume {report.campaign}` and `newsletter send {slug}` "
            "(or let `newsletter run` or `newsletter worker` send it)"
        )


class SendDeferredError(DeliveryError):
    """Nothing was delivered: every message tried was refused for now (to retry later)."""

    def __init__(self, report: SendReport, slug: str) -> None:
        self.report = report
        why = f" ({report.reason})" if report.reason else ""
        super().__init__(
            f"campaign {report.campaign} of {slug}: nothing delivered, {report.retry} messages "
            f"refused for now{why}; they are retried by `newsletter run` or `newsletter worker`, "
            f"or by `newsletter send {slug}` again once the server is reachable "
            "(`send --dry-run` shows what waits)"
        )


def paused_error(report: SendReport, slug: str) -> DeliveryError | None:
    """The error a door reports for a send that ended paused, or that delivered nothing while
    rows wait for a retry; None when the send went as a send should."""
    if report.state == CampaignState.PAUSED:
        return SendPausedError(report, slug)
    if report.retry and not (report.sent or report.failed or report.skipped):
        return SendDeferredError(report, slug)
    return None


def found_nothing(report: SendReport) -> bool:
    """The send tried nothing: every row was done already, or waits for a later plan."""
    return not (report.sent or report.failed or report.skipped or report.retry or report.unknown)


def why_nothing_sent(
    settings: Settings, slug: str, campaign: int, *, db: Engine | None = None
) -> str:
    """Why a send of the issue's campaign found nothing to send, in one sentence."""
    with database(settings, db) as engine, Session(engine) as session:
        facts = campaign_facts(session, campaign)
    return nothing_sent_reason(slug, facts)


def _day(moment: dt.datetime | None) -> str:
    return moment.date().isoformat() if moment is not None else "an unknown date"


def _through(transport: str) -> str:
    return f" through the {transport} transport" if transport else ""


def nothing_sent_reason(slug: str, facts: CampaignFacts) -> str:
    """Pure: the sentence `why_nothing_sent` says, from what the campaign holds."""
    by_state = facts.by_state
    total = sum(by_state.values())
    sent = by_state.get(DeliveryState.SENT, 0)
    c = facts.campaign
    if total == 0:
        if facts.active == 0:
            return (
                f"nothing to send: {slug} has no recipients, as no subscriber is active "
                "(add some with `newsletter subscribers import` or `subscribers add`)"
            )
        return f"nothing to send: campaign {c} of {slug} has no recipients"
    if facts.next_window is not None:
        return (
            f"nothing due yet: {live_rows(by_state)} recipients of {slug} wait for the scheduled "
            f"send of campaign {c} (the first at {facts.next_window.isoformat(timespec='minutes')}"
            "); `newsletter schedule list` shows it, `schedule cancel` then `send` sends now"
        )
    if sent == total:
        return (
            f"nothing to send: all {total} recipients of {slug} were sent by campaign {c} on "
            f"{_day(facts.last_sent)}{_through(facts.transport)}"
        )
    parts = [f"{sent} sent (last on {_day(facts.last_sent)}{_through(facts.transport)})"]
    steps: list[str] = []
    if failed := by_state.get(DeliveryState.FAILED, 0):
        parts.append(f"{failed} failed")
        steps.append(f"`newsletter campaign requeue-failed {c}` retries the failed")
    if unknown := by_state.get(DeliveryState.UNKNOWN, 0):
        parts.append(f"{unknown} unknown")
        steps.append("`newsletter send --resend-unknown` resends the unknown (may repeat)")
    if skipped := by_state.get(DeliveryState.SKIPPED, 0):
        parts.append(f"{skipped} skipped")
    if retry := by_state.get(DeliveryState.RETRY, 0):
        when = facts.next_retry.isoformat(timespec="minutes") if facts.next_retry else "later"
        parts.append(f"{retry} to retry (next at {when})")
    if sending := by_state.get(DeliveryState.SENDING, 0):
        parts.append(f"{sending} on the wire with another sender")
    detail = "; ".join(steps)
    return (
        f"nothing to send: the {total} recipients of {slug} in campaign {c} are "
        f"{', '.join(parts)}" + (f"; {detail}" if detail else "")
    )


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
    mission_defaults: bool = False  # the interests are the mission's: the subscriber chose none


@dataclass(frozen=True)
class Preview:
    email: str
    subject: str
    html: str
    text: str


def recipient_data(session: Session, email: str, scope: Scope) -> RecipientData:
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
        return runtime.issue_context(session, settings, slug), recipient_data(session, email, scope)


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
    defaults = not recipient.sectors and bool(selection.interests)
    return Explanation(
        recipient.email, tuple(sorted(selection.interests)), decisions, mission_defaults=defaults
    )


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
