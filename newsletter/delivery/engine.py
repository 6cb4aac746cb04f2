"""The sending engine: claim ledger rows in batches, compose, send over a connection pool, record."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from sqlalchemy import Engine
from sqlmodel import Session

from newsletter.config import DeliverySettings
from newsletter.delivery import ledger
from newsletter.delivery.campaigns import counts, mark_lost_unknown
from newsletter.delivery.compose import IssueContext, RecipientData, profile_for
from newsletter.delivery.composer import Composer, HelperSetup, Job, LocalComposer, ProcessComposer
from newsletter.delivery.ledger import Outcome
from newsletter.delivery.replies import Reply, Verdict, classify
from newsletter.delivery.throttle import Throttle
from newsletter.delivery.transports import CONNECTION_FAULT, Connection, Transport
from newsletter.models import (
    Campaign,
    CampaignState,
    DeliveryState,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from newsletter.subscriptions.store import set_status

Progress = Callable[[int], None]
# This many 421 replies in one window means the server is shedding us: pause, don't hammer it.
BURST_421 = 3
# A helper process composes when a campaign has more rows waiting than this (and than two
# batches): its start-up (imports, templates, a connection) costs about as much as sending
# 3,000 messages gains here (bench/send.py --helper on|off).
HELPER_MIN_ROWS = 3000


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base: dt.timedelta = dt.timedelta(minutes=1)
    cap: dt.timedelta = dt.timedelta(hours=2)
    max_age: dt.timedelta = dt.timedelta(hours=48)

    @classmethod
    def from_settings(cls, settings: DeliverySettings) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            base=dt.timedelta(seconds=settings.retry_base_seconds),
            max_age=dt.timedelta(hours=settings.retry_max_age_hours),
        )

    def next_attempt(self, attempts: int, now: dt.datetime, rng: random.Random) -> dt.datetime:
        """Exponential backoff with jitter in [0.5, 1.5) of the step, so retries spread out."""
        step: dt.timedelta = min(self.base * (2 ** max(attempts - 1, 0)), self.cap)
        return now + step * (0.5 + rng.random())

    def gives_up(self, attempts: int, first: dt.datetime | None, now: dt.datetime) -> bool:
        return attempts >= self.max_attempts or (first is not None and now - first >= self.max_age)


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
    replies: Counter[int] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "campaign": self.campaign, "sent": self.sent, "failed": self.failed,
            "skipped": self.skipped, "retry": self.retry, "unknown": self.unknown,
            "profiles": self.profiles, "bytes": self.bytes, "seconds": round(self.seconds, 3),
            "state": self.state, "reason": self.reason,
        }  # fmt: skip


def pause_reason(replies: Sequence[Reply]) -> str:
    """Why a window's replies mean the fault is ours or the server's, not the recipients' ('' if not)."""
    ours = next((r for r in replies if classify(r) is Verdict.PAUSE), None)
    if ours is not None:
        return str(ours)
    if sum(1 for r in replies if r.code == 421) >= BURST_421:
        return "the server keeps answering 421 (too busy or rate limited); resume later"
    if replies and all(r.code == CONNECTION_FAULT for r in replies):
        return f"cannot reach the SMTP server: {replies[0].text}"
    return ""


class SendEngine:
    """Sends one campaign's due rows; safe to run beside other engines on PostgreSQL.

    Batches are claimed (leased) and composed while the previous batch is on the wire: on a ledger
    thread, or for a big campaign in a helper process on another core (`helper`: None decides by
    the number of rows waiting). A batch goes out in windows of `concurrency` messages: each
    window's rows are marked `sending` in the same commit that records the previous window, so a
    crash leaves at most one window `unknown`.
    """

    def __init__(
        self,
        *,
        db: Engine,
        context: IssueContext,
        transport: Transport,
        delivery: DeliverySettings | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        rng: random.Random | None = None,
        progress: Progress | None = None,
        stop: asyncio.Event | None = None,
        worker: str | None = None,
        helper: bool | None = None,
    ) -> None:
        settings = delivery or DeliverySettings()
        self.db = db
        self.ctx = context
        self.transport = transport
        self.batch_size = settings.batch_size
        self.lease = dt.timedelta(seconds=settings.lease_seconds)
        self.retry = RetryPolicy.from_settings(settings)
        self.throttle = Throttle(settings.rate, settings.per_domain_rate)
        self.clock = clock
        self.rng = rng or random.Random()
        self.progress = progress
        self.stop = stop or asyncio.Event()
        self.worker = worker or worker_name()
        self.helper = helper
        self.connections: list[Connection] = []
        self.paused = ""
        self._bounces: list[
            tuple[int, str]
        ] = []  # (subscriber, reply) to mark bounced at the next write

    async def run(self, campaign_id: int) -> SendReport:
        started = time.perf_counter()
        report = SendReport(campaign=campaign_id)
        composer = self._composer(campaign_id)  # a helper process starts up beside `_start`
        try:
            with Session(self.db, expire_on_commit=False) as session:
                self._start(session, campaign_id, report)
            try:
                await self._pipeline(campaign_id, report, composer)
            finally:
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
            if campaign is None or campaign.state not in (
                CampaignState.READY,
                CampaignState.SENDING,
            ):
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
        ledger.plan_profiles(session, campaign_id, self._profile_of)
        campaign = session.get(Campaign, campaign_id)
        if campaign is not None and campaign.state == CampaignState.READY:
            campaign.state, campaign.started_at = CampaignState.SENDING, campaign.started_at or now
            session.add(campaign)
            session.commit()

    def _profile_of(
        self, subscriber_id: int, language: str, embassy: str, sectors: tuple[str, ...]
    ) -> str:
        return profile_for(
            self.ctx, RecipientData(subscriber_id, "", "", language, embassy, sectors, "")
        )

    async def _pipeline(self, campaign_id: int, report: SendReport, composer: Composer) -> None:
        """Claim and compose the next batch while the current one is on the wire."""
        loop = asyncio.get_running_loop()
        jobs = await self._next_batch(composer, campaign_id)
        while jobs:
            sending = asyncio.ensure_future(self._send_batch(campaign_id, jobs, report))
            following: list[Job] = []
            try:
                if not self.stop.is_set():
                    following = await self._next_batch(composer, campaign_id)
            finally:
                # Whatever became of that claim, the batch on the wire finishes and is recorded.
                await sending
            if self.paused or self.stop.is_set():
                await loop.run_in_executor(None, self._release, following)
                break
            jobs = following

    async def _next_batch(self, composer: Composer, campaign_id: int) -> list[Job]:
        return await composer.claim(
            campaign_id, now=self.clock(), limit=self.batch_size, worker=self.worker,
            lease=self.lease, preview=self.transport.name == "file",
        )  # fmt: skip

    def _release(self, jobs: Sequence[Job]) -> None:
        with Session(self.db) as session:
            ledger.release(session, [j.row.delivery_id for j in jobs], self.clock())

    async def _send_batch(self, campaign_id: int, jobs: Sequence[Job], report: SendReport) -> None:
        """Send a batch window by window; one commit per window records the last and marks the next."""
        loop = asyncio.get_running_loop()
        gone = "subscriber no longer active"
        skipped = [
            Outcome(j.row.delivery_id, DeliveryState.SKIPPED, gone)
            for j in jobs
            if j.letter is None
        ]
        report.skipped += len(skipped)
        if skipped and self.progress:
            self.progress(len(skipped))
        todo = [j for j in jobs if j.letter is not None]
        width = max(1, self.transport.max_connections)
        while len(self.connections) < min(width, len(todo)):
            self.connections.append(await self.transport.connect())
        pending: list[Outcome] = skipped
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wire-ledger") as wire:
            for start in range(0, len(todo), width):
                window = todo[start : start + width]
                if self.stop.is_set() or self.paused:
                    await loop.run_in_executor(wire, self._write, campaign_id, pending, [])
                    await loop.run_in_executor(wire, self._release, todo[start:])
                    pending = []
                    break
                ids = [j.row.delivery_id for j in window]
                await loop.run_in_executor(wire, self._write, campaign_id, pending, ids)
                replies = await asyncio.gather(
                    *(self._send_one(c, j) for c, j in zip(self.connections, window, strict=False))
                )
                pending = self._outcomes(window, replies, report)
                if self.progress:
                    self.progress(len(window))
            if pending:
                await loop.run_in_executor(wire, self._write, campaign_id, pending, [])

    async def _send_one(self, connection: Connection, job: Job) -> Reply:
        assert job.letter is not None
        await self.throttle.acquire(job.letter.rcpt)
        return await connection.send(job.letter.outgoing())

    def _outcomes(
        self, window: Sequence[Job], replies: Sequence[Reply], report: SendReport
    ) -> list[Outcome]:
        now = self.clock()
        reason = pause_reason(replies)
        if reason:
            self.paused = reason
        outcomes = []
        for job, reply in zip(window, replies, strict=True):
            report.replies[reply.code] += 1
            outcome = self._outcome(job, reply, now, pausing=bool(reason))
            outcomes.append(outcome)
            if outcome.state == DeliveryState.SENT:
                report.sent += 1
                report.bytes += job.letter.size if job.letter else 0
            elif outcome.state == DeliveryState.FAILED:
                report.failed += 1
                if classify(reply) is Verdict.BOUNCE:
                    self._bounces.append((job.row.subscriber_id, str(reply)[:300]))
        return outcomes

    def _outcome(self, job: Job, reply: Reply, now: dt.datetime, *, pausing: bool) -> Outcome:
        row = job.row
        untouched = Outcome(
            row.delivery_id, DeliveryState.QUEUED, str(reply)[:500], row.attempts, row.first_attempt_at,
            profile=job.profile, message_id=job.message_id,
        )  # fmt: skip
        verdict = classify(reply)
        if pausing and verdict is not Verdict.SENT:
            # The fault is ours or the server's, not the recipient's: no attempt is counted.
            return untouched
        if verdict is Verdict.DEFER:
            # The session's fault, not the recipient's: wait a little, no attempt counted.
            later = self.retry.next_attempt(1, now, self.rng)
            return replace(untouched, state=DeliveryState.RETRY, next_attempt_at=later,
                           first_attempt_at=row.first_attempt_at or now)  # fmt: skip
        tried = replace(
            untouched, attempts=row.attempts + 1, first_attempt_at=row.first_attempt_at or now
        )
        if verdict is Verdict.SENT:
            return replace(tried, state=DeliveryState.SENT, sent_at=now)
        if verdict is Verdict.RETRY and not self.retry.gives_up(
            tried.attempts, tried.first_attempt_at, now
        ):
            later = self.retry.next_attempt(tried.attempts, now, self.rng)
            return replace(tried, state=DeliveryState.RETRY, next_attempt_at=later)
        return replace(tried, state=DeliveryState.FAILED)

    def _write(self, campaign_id: int, outcomes: Sequence[Outcome], sending: Sequence[int]) -> None:
        with Session(self.db, expire_on_commit=False) as session:
            ledger.write(
                session, outcomes=outcomes, sending=sending, now=self.clock(), commit=False
            )
            bounces, self._bounces = self._bounces, []
            for subscriber_id, detail in bounces:
                subscriber = session.get(Subscriber, subscriber_id)
                if subscriber is not None:
                    set_status(session, subscriber, SubscriberStatus.BOUNCED, actor="smtp", via="bounce",
                               detail=detail)  # fmt: skip
            if self.paused:
                campaign = session.get(Campaign, campaign_id)
                if campaign is not None and campaign.state == CampaignState.SENDING:
                    campaign.state, campaign.reason = CampaignState.PAUSED, self.paused
                    session.add(campaign)
            session.commit()

    def _finish(self, session: Session, campaign_id: int, report: SendReport) -> None:
        by_state = counts(session, campaign_id)
        report.retry = by_state.get(DeliveryState.RETRY, 0)
        report.unknown = by_state.get(DeliveryState.UNKNOWN, 0)
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        live = (DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.RETRY)
        if campaign.state == CampaignState.SENDING and not any(by_state.get(s) for s in live):
            campaign.state, campaign.finished_at = CampaignState.FINISHED, self.clock()
            session.add(campaign)
            session.commit()
        report.state, report.reason = str(campaign.state), campaign.reason

    async def _close(self) -> None:
        connections, self.connections = self.connections, []
        for connection in connections:
            await connection.close()
