"""The sending engine: claim ledger rows in batches, compose, send over a connection pool, record."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

from sqlalchemy.exc import DBAPIError

from newsletter.config import DeliverySettings
from newsletter.db import Engine, Session, database_problem
from newsletter.delivery import ledger
from newsletter.delivery.batches import (
    Composer,
    HelperSetup,
    IssueRenderError,
    Job,
    LocalComposer,
    ProcessComposer,
)
from newsletter.delivery.campaigns import counts, mark_lost_unknown, settle
from newsletter.delivery.compose import IssueContext, RecipientData, profile_for
from newsletter.delivery.ledger import Outcome
from newsletter.delivery.relay_watch import RelayWatch, Signal
from newsletter.delivery.replies import Reply, Verdict, classify
from newsletter.delivery.throttle import Throttle
from newsletter.delivery.transports import Connection, Transport
from newsletter.models import (
    Campaign,
    CampaignState,
    DeliveryState,
    SkipReason,
    utcnow,
)
from newsletter.states import SENDABLE, move

Progress = Callable[[int], None]


class BounceRecorder(Protocol):
    """Marks a subscriber bounced after a 5.1.x refusal, in the engine's transaction (no commit).

    Passed in by the service that runs the engine: who may become bounced is the lifecycle's
    rule (never someone who left on their own), which lives above delivery.
    """

    def __call__(
        self, session: Session, subscriber_id: int, detail: str, *, now: dt.datetime
    ) -> bool: ...


log = logging.getLogger(__name__)
# A helper process composes when a campaign has more rows waiting than this (and than two
# batches): its start-up (imports, templates, a connection) costs about as much as sending
# 3,000 messages gains here (bench/send.py --helper on|off).
HELPER_MIN_ROWS = 3000


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RetryPolicy:
    """Temporary failures are retried for a time budget (RFC 5321 4.5.4.1: days, not minutes).

    `max_attempts` (0: none) caps the attempts as well; the budget alone decides by default, so
    an outage of a quarter of an hour costs nobody their issue.
    """

    max_attempts: int
    base: dt.timedelta
    cap: dt.timedelta
    max_age: dt.timedelta

    @classmethod
    def from_settings(cls, settings: DeliverySettings) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            base=dt.timedelta(seconds=settings.retry_base_seconds),
            cap=dt.timedelta(seconds=settings.retry_cap_seconds),
            max_age=dt.timedelta(hours=settings.retry_max_age_hours),
        )

    def next_attempt(self, attempts: int, now: dt.datetime, rng: random.Random) -> dt.datetime:
        """Exponential backoff with jitter in [0.5, 1.5) of the step, so retries spread out."""
        step: dt.timedelta = min(self.base * (2 ** min(max(attempts - 1, 0), 30)), self.cap)
        return now + step * (0.5 + rng.random())

    def back_off(
        self, since: dt.datetime | None, now: dt.datetime, rng: random.Random
    ) -> dt.datetime:
        """When a campaign whose server defers everyone tries again: the longer the server has
        been deferring (since the oldest deferred row's first attempt), the longer the wait."""
        waited = now - since if since is not None else dt.timedelta(0)
        step = min(max(self.base, waited), self.cap)
        return now + step * (0.5 + rng.random())

    def gives_up(self, attempts: int, first: dt.datetime | None, now: dt.datetime) -> bool:
        capped = self.max_attempts > 0 and attempts >= self.max_attempts
        return capped or (first is not None and now - first >= self.max_age)


@dataclass
class SendReport:
    campaign: int
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    retry: int = 0
    unknown: int = 0
    profiles: int = 0
    bytes: int = 0
    seconds: float = 0.0
    state: str = ""
    reason: str = ""
    recovered_unknown: int = 0
    lost: int = 0  # outcomes not written: the row was cancelled or passed to another worker
    replies: Counter[int] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "campaign": self.campaign, "sent": self.sent, "failed": self.failed,
            "skipped": self.skipped, "retry": self.retry, "unknown": self.unknown,
            "profiles": self.profiles, "bytes": self.bytes, "seconds": round(self.seconds, 3),
            "state": self.state, "reason": self.reason, "lost": self.lost,
        }  # fmt: skip


class SendEngine:
    """Sends one campaign's due rows; safe to run beside other engines on PostgreSQL.

    Batches are claimed (leased) and composed while the previous batch is on the wire: on a ledger
    thread, or for a big campaign in a helper process on another core (`helper`: None decides by
    the number of rows waiting). A batch goes out in windows of `concurrency` messages: each
    window's rows are marked `sending` in the same commit that records the previous window, so a
    crash leaves at most one window `unknown`.

    Every row the engine holds (claimed, waiting its turn, or on the wire) stays leased in its name
    for as long as it holds it: a task renews the leases, however slow the relay or the rate
    limit. Marking and recording touch only rows still held, and marking stops at once when staff
    paused or cancelled the campaign, so pause and cancel take effect before the next window.
    """

    def __init__(
        self,
        *,
        db: Engine,
        context: IssueContext,
        transport: Transport,
        delivery: DeliverySettings,
        bounced: BounceRecorder,
        clock: Callable[[], dt.datetime] = utcnow,
        rng: random.Random | None = None,
        progress: Progress | None = None,
        stop: asyncio.Event | None = None,
        worker: str | None = None,
        helper: bool | None = None,
    ) -> None:
        settings = delivery
        self.db = db
        self.ctx = context
        self.bounced = bounced
        self.transport = transport
        self.lease = dt.timedelta(seconds=settings.lease_seconds)
        self.batch_size = _claim_limit(settings, max(1, transport.max_connections))
        self.retry = RetryPolicy.from_settings(settings)
        self.throttle = Throttle(settings.rate, settings.per_domain_rate)
        self.watch = RelayWatch(
            refusal_burst=settings.refusal_burst, deferral_burst=settings.deferral_burst
        )
        self.clock = clock
        self.rng = rng or random.Random()
        self.progress = progress
        self.stop = stop or asyncio.Event()
        self.worker = worker or worker_name()
        self.helper = helper
        self.connections: list[Connection] = []
        self.paused = ""  # why the engine pauses the campaign itself
        self.halted = ""  # why it stops without pausing: staff paused or cancelled, or a back-off
        self.backing_off: dt.datetime | None = None
        # Delivery ids this engine holds: claimed and neither recorded nor released yet.
        self.held: set[int] = set()
        self._held_lock = threading.Lock()  # the loop, the ledger thread and renewals share it
        self.lost = 0
        self._noted = False  # the campaign carries a reason this engine may clear (a back-off)
        # Permanent refusals that stand only once the relay accepts someone (see relay_watch).
        self.suspects: list[tuple[Job, Reply, dt.datetime]] = []
        self._bounces: list[tuple[int, str]] = []  # (subscriber, reply) to mark at the next write

    async def run(self, campaign_id: int) -> SendReport:
        started = time.perf_counter()
        report = SendReport(campaign=campaign_id)
        composer = self._composer(campaign_id)  # a helper process starts up beside `_start`
        try:
            with Session(self.db, expire_on_commit=False) as session:
                self._start(session, campaign_id, report)
            keeper = asyncio.ensure_future(self._keep_leases())
            try:
                await self._pipeline(campaign_id, report, composer)
            finally:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
                await self._close()
        finally:
            await composer.close()
        with Session(self.db, expire_on_commit=False) as session:
            self._finish(session, campaign_id, report)
        report.profiles = composer.renders
        report.seconds = time.perf_counter() - started
        return report

    def _composer(self, campaign_id: int) -> Composer:
        """A helper process when asked for, or when enough rows wait to repay its start-up."""
        setup = HelperSetup.of(self.db, self.ctx) if self.helper is not False else None
        if setup is not None and (
            self.helper or self._waiting(campaign_id) > max(HELPER_MIN_ROWS, 2 * self.batch_size)
        ):
            return ProcessComposer(setup)
        return LocalComposer(self.db, self.ctx)

    def _waiting(self, campaign_id: int) -> int:
        with Session(self.db) as session:
            campaign = session.get(Campaign, campaign_id)
            if campaign is None or campaign.state not in SENDABLE:
                return 0
            return ledger.waiting(session, campaign_id)

    def _start(self, session: Session, campaign_id: int, report: SendReport) -> None:
        now = self.clock()
        sqlite = self.db.dialect.name == "sqlite"
        # SQLite: the sender lock proves no other sender lives, so every claim is stale.
        report.recovered_unknown = mark_lost_unknown(session, campaign_id, now=now, everyone=sqlite)
        if sqlite:
            ledger.release_leases(session, campaign_id)
        report.skipped += ledger.skip_missed(session, campaign_id, now)
        session.commit()
        after = 0
        while after := ledger.plan_profiles(session, campaign_id, self._profile_of, after=after):
            session.commit()  # a chunk at a time: planning a long list never holds the database
        campaign = session.get(Campaign, campaign_id)
        # A scheduled campaign comes here once a row's window opened (see campaigns_with_work).
        idle = (CampaignState.READY, CampaignState.SCHEDULED)
        self._noted = bool(campaign is not None and campaign.reason)
        if campaign is not None and campaign.state in idle:
            move(campaign, CampaignState.SENDING, reason=campaign.reason, now=now)
            session.add(campaign)
        session.commit()  # lost rows reported, missed ones skipped, profiles noted: one step

    def _profile_of(
        self, subscriber_id: int, language: str, embassy: str, sectors: tuple[str, ...]
    ) -> str:
        return profile_for(
            self.ctx, RecipientData(subscriber_id, "", "", language, embassy, sectors, "")
        )

    @property
    def _stopping(self) -> bool:
        return bool(self.stop.is_set() or self.paused or self.halted)

    async def _pipeline(self, campaign_id: int, report: SendReport, composer: Composer) -> None:
        """Claim and compose the next batch while the current one is on the wire."""
        loop = asyncio.get_running_loop()
        jobs = await self._next_batch(composer, campaign_id)
        while jobs:
            sending = asyncio.ensure_future(self._send_batch(campaign_id, jobs, report))
            following: list[Job] = []
            try:
                if not self._stopping:
                    following = await self._next_batch(composer, campaign_id)
            finally:
                # Whatever became of that claim, the batch on the wire finishes and is recorded.
                await sending
            if self._stopping:
                await loop.run_in_executor(None, self._release, following)
                break
            jobs = following
        # Refusals still suspect when nothing is left to send: too few to call a relay fault.
        if self.suspects and not self.paused:
            await loop.run_in_executor(None, self._write, campaign_id, self._confirm(report), [])
        await loop.run_in_executor(None, self._wrap_up, campaign_id, report)

    async def _next_batch(self, composer: Composer, campaign_id: int) -> list[Job]:
        try:
            jobs = await composer.claim(
                campaign_id, now=self.clock(), limit=self.batch_size, worker=self.worker,
                lease=self.lease, preview=self.transport.name == "file",
            )  # fmt: skip
        except IssueRenderError as exc:
            self.paused = str(exc)
            return []
        self._hold(j.row.delivery_id for j in jobs)
        return jobs

    async def _keep_leases(self) -> None:
        """Renew the leases on every row this engine holds, a third of a lease apart."""
        loop = asyncio.get_running_loop()
        every = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            try:
                await loop.run_in_executor(None, self._renew)
            except DBAPIError as exc:
                # The next renewal tries again; the lease has two more thirds to run.
                log.warning("could not renew leases: %s", database_problem(exc) or exc)

    def _hold(self, ids: Iterable[int]) -> None:
        with self._held_lock:
            self.held.update(ids)

    def _let_go(self, ids: Iterable[int]) -> None:
        with self._held_lock:
            self.held.difference_update(ids)

    def _renew(self) -> None:
        with self._held_lock:
            held = list(self.held)
        if held:
            now = self.clock()
            with Session(self.db) as session:
                ledger.renew(session, held, worker=self.worker, until=now + self.lease, now=now)
                session.commit()

    def _release(self, jobs: Sequence[Job]) -> None:
        ids = [j.row.delivery_id for j in jobs]
        if ids:
            with Session(self.db) as session:
                ledger.release(session, ids, self.clock(), worker=self.worker)
                session.commit()
            self._let_go(ids)

    async def _send_batch(self, campaign_id: int, jobs: Sequence[Job], report: SendReport) -> None:
        """Send a batch window by window; one commit per window records the last and marks the next."""
        loop = asyncio.get_running_loop()
        pending = self._unsendable(jobs, report)
        todo = [j for j in jobs if j.letter is not None]
        width = max(1, self.transport.max_connections)
        while len(self.connections) < min(width, len(todo)):
            self.connections.append(await self.transport.connect())
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wire-ledger") as wire:
            start = 0
            while start < len(todo):
                window = todo[start : start + width]
                if self._stopping:
                    break
                ids = [j.row.delivery_id for j in window]
                marked = set(
                    await loop.run_in_executor(wire, self._write, campaign_id, pending, ids)
                )
                pending = []
                if len(marked) < len(window):
                    # Paused, cancelled, or taken over: not put on the wire. Those still
                    # ours are released when the engine lets go of what it holds.
                    if not marked:
                        await loop.run_in_executor(wire, self._check_campaign, campaign_id)
                    window = [j for j in window if j.row.delivery_id in marked]
                start += width
                if not window:
                    continue
                replies = await asyncio.gather(
                    *(self._send_one(c, j) for c, j in zip(self.connections, window, strict=False))
                )
                pending = self._outcomes(window, replies, report)
                if self.progress:
                    self.progress(len(window))
            if pending:
                await loop.run_in_executor(wire, self._write, campaign_id, pending, [])
            await loop.run_in_executor(wire, self._release, todo[start:])

    def _unsendable(self, jobs: Sequence[Job], report: SendReport) -> list[Outcome]:
        """Rows with no letter: skipped (no longer active), or failed (could not be composed)."""
        now = self.clock()
        outcomes: list[Outcome] = []
        for job in jobs:
            if job.letter is not None:
                continue
            row = job.row
            if job.error:
                report.failed += 1
                outcomes.append(
                    Outcome(
                        row.delivery_id, DeliveryState.FAILED, job.error[:500], row.attempts,
                        row.first_attempt_at or now, profile=job.profile,
                    )
                )  # fmt: skip
            else:
                report.skipped += 1
                outcomes.append(
                    Outcome(
                        row.delivery_id,
                        DeliveryState.SKIPPED,
                        "subscriber no longer active",
                        skip_reason=SkipReason.NOT_ACTIVE,
                    )
                )
        if outcomes and self.progress:
            self.progress(len(outcomes))
        return outcomes

    async def _send_one(self, connection: Connection, job: Job) -> Reply:
        assert job.letter is not None
        await self.throttle.acquire(job.letter.rcpt)
        return await connection.send(job.letter.outgoing())

    def _outcomes(
        self, window: Sequence[Job], replies: Sequence[Reply], report: SendReport
    ) -> list[Outcome]:
        now = self.clock()
        signal = Signal.NONE
        for job, reply in zip(window, replies, strict=True):
            seen = self.watch.observe(reply, job.letter.rcpt if job.letter else "")
            if seen is not Signal.NONE and signal is not Signal.PAUSE:
                signal, reason = seen, self.watch.reason(seen)
        outcomes: list[Outcome] = []
        for job, reply in zip(window, replies, strict=True):
            report.replies[reply.code] += 1
            verdict = classify(reply)
            if verdict is Verdict.SENT:
                # The relay accepts mail: the refusals held so far were about those recipients.
                outcomes.extend(self._confirm(report))
            elif signal is not Signal.PAUSE and self.watch.suspect(reply):
                self.suspects.append((job, reply, now))
                continue
            outcomes.append(self._outcome(job, reply, now, signal=signal, report=report))
        if signal is Signal.PAUSE:
            self.paused = reason
            # The suspects were refused by the same faulty relay: they wait again, untouched.
            suspects, self.suspects = self.suspects, []
            outcomes.extend(self._untouched(job, reply) for job, reply, _ in suspects)
        elif signal is Signal.BACK_OFF:
            since = min((o.first_attempt_at for o in outcomes if o.first_attempt_at), default=now)
            self.backing_off = self.retry.back_off(since, now, self.rng)
            self.halted = f"{reason}; trying again from {self.backing_off:%Y-%m-%d %H:%M} UTC"
        return outcomes

    def _confirm(self, report: SendReport) -> list[Outcome]:
        """The suspect refusals stand: each row failed, bounced where the address does not exist."""
        suspects, self.suspects = self.suspects, []
        return [
            self._outcome(job, reply, at, signal=Signal.NONE, report=report)
            for job, reply, at in suspects
        ]

    def _untouched(self, job: Job, reply: Reply) -> Outcome:
        row = job.row
        return Outcome(
            row.delivery_id, DeliveryState.QUEUED, str(reply)[:500], row.attempts,
            row.first_attempt_at, profile=job.profile, message_id=job.message_id,
        )  # fmt: skip

    def _outcome(
        self, job: Job, reply: Reply, now: dt.datetime, *, signal: Signal, report: SendReport
    ) -> Outcome:
        row = job.row
        untouched = self._untouched(job, reply)
        verdict = classify(reply)
        if verdict is Verdict.SENT:
            report.sent += 1
            report.bytes += job.letter.size if job.letter else 0
            tried = replace(untouched, attempts=row.attempts + 1)
            return replace(tried, state=DeliveryState.SENT, sent_at=now,
                           first_attempt_at=row.first_attempt_at or now)  # fmt: skip
        if signal is Signal.PAUSE:
            # The fault is ours or the server's, not the recipient's: no attempt is counted.
            return untouched
        first = row.first_attempt_at or now
        if verdict is Verdict.DEFER or signal is Signal.BACK_OFF:
            # The session's or the server's doing, not the recipient's: wait, no attempt counted.
            if self.retry.gives_up(0, first, now):
                report.failed += 1
                return replace(untouched, state=DeliveryState.FAILED, first_attempt_at=first)
            later = self.retry.next_attempt(1, now, self.rng)
            return replace(untouched, state=DeliveryState.RETRY, next_attempt_at=later,
                           first_attempt_at=first)  # fmt: skip
        tried = replace(untouched, attempts=row.attempts + 1, first_attempt_at=first)
        if verdict is Verdict.RETRY and not self.retry.gives_up(tried.attempts, first, now):
            later = self.retry.next_attempt(tried.attempts, now, self.rng)
            return replace(tried, state=DeliveryState.RETRY, next_attempt_at=later)
        report.failed += 1
        if verdict is Verdict.BOUNCE:
            self._bounces.append((row.subscriber_id, str(reply)[:300]))
        return replace(tried, state=DeliveryState.FAILED)

    def _write(
        self, campaign_id: int, outcomes: Sequence[Outcome], sending: Sequence[int]
    ) -> list[int]:
        """Record `outcomes` and mark `sending` on the wire, in one commit; the ids now marked.

        A lost database connection is retried on a fresh one for a while: these outcomes exist
        nowhere else, and writing them twice changes nothing (only held rows are touched).
        """
        delay = 0.2
        deadline = time.monotonic() + min(60.0, self.lease.total_seconds() / 2)
        while True:
            try:
                return self._write_once(campaign_id, outcomes, sending)
            except DBAPIError as exc:
                # Only a fault worth waiting out (the shared test in `db`); a bug raises at once.
                problem = database_problem(exc)
                if problem is None or time.monotonic() + delay > deadline:
                    raise
                log.warning("could not record a window (%s); retrying in %.1f s", problem, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _write_once(
        self, campaign_id: int, outcomes: Sequence[Outcome], sending: Sequence[int]
    ) -> list[int]:
        now = self.clock()
        with Session(self.db, expire_on_commit=False) as session:
            if self.paused:
                sending = []
            written = ledger.write(
                session, outcomes=outcomes, sending=sending, now=now, worker=self.worker,
                lease=self.lease,
            )  # fmt: skip
            bounces = self._bounces
            for subscriber_id, detail in bounces:
                # Through the lifecycle: someone who left on their own is never made bounced.
                self.bounced(session, subscriber_id, detail, now=now)
            backing_off = bool(self.halted and self.backing_off is not None)
            over = self._noted and any(o.state == DeliveryState.SENT for o in outcomes)
            # The campaign row is read only when there is something to say on it: a window
            # write runs hundreds of times a second.
            campaign = (
                session.get(Campaign, campaign_id) if self.paused or backing_off or over else None
            )
            if campaign is not None and campaign.state == CampaignState.SENDING:
                if self.paused:
                    move(campaign, CampaignState.PAUSED, reason=self.paused, now=now)
                elif backing_off and self.backing_off is not None:
                    ledger.postpone(session, campaign_id, self.backing_off, now)
                    campaign.reason, self._noted = self.halted, True
                elif over:
                    # A back-off is over: the server accepts mail again.
                    campaign.reason, self._noted = "", False
                session.add(campaign)
            session.commit()
        self._bounces = self._bounces[len(bounces) :]
        self.lost += len(outcomes) - written.recorded
        self._let_go(o.id for o in outcomes)
        return written.sending

    def _check_campaign(self, campaign_id: int) -> None:
        """No row could be marked: if staff paused or cancelled the campaign, stop here."""
        with Session(self.db) as session:
            campaign = session.get(Campaign, campaign_id)
            if campaign is None or campaign.state != CampaignState.SENDING:
                state = campaign.state if campaign is not None else "gone"
                self.halted = f"campaign {campaign_id} is {state}"

    def _wrap_up(self, campaign_id: int, report: SendReport) -> None:
        """Whatever the engine still holds goes back to the queue (a stop, a pause, a cancel)."""
        with self._held_lock:
            held = list(self.held)
        if held:
            with Session(self.db) as session:
                ledger.release(session, held, self.clock(), worker=self.worker)
                session.commit()
            self._let_go(held)
        if self.paused:  # e.g. the issue could not render: no window was written to say so
            self._write(campaign_id, [], [])
        report.lost = self.lost

    def _finish(self, session: Session, campaign_id: int, report: SendReport) -> None:
        by_state = counts(session, campaign_id)
        report.retry = by_state.get(DeliveryState.RETRY, 0)
        report.unknown = by_state.get(DeliveryState.UNKNOWN, 0)
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        if campaign.state == CampaignState.SENDING:
            # Finished, ready again (nobody received it), or scheduled (the rest wait for a
            # later plan): see `settle`.
            why = ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
            settle(session, campaign, now=self.clock(), why=why)
            session.commit()
        report.state = str(campaign.state)
        report.reason = campaign.reason or self.halted

    async def _close(self) -> None:
        connections, self.connections = self.connections, []
        for connection in connections:
            await connection.close()


def _claim_limit(settings: DeliverySettings, width: int) -> int:
    """Rows per claim: never more than can go out within a third of the lease at the set rate.

    The next batch is claimed while the current one is on the wire, so what is claimed waits up to
    a batch's sending time; renewals keep it leased, and a small claim keeps that wait short.
    """
    limit = settings.batch_size
    if settings.rate > 0:
        limit = min(limit, max(width, int(settings.rate * settings.lease_seconds / 3)))
    return limit
