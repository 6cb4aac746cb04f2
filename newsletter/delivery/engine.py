"""The sending engine: claim ledger rows in batches, compose, send over a connection pool, record."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from newsletter.delivery.campaigns import counts, mark_in_flight_unknown
from newsletter.delivery.compose import IssueContext, RecipientData, compose
from newsletter.delivery.replies import Reply, Verdict, classify
from newsletter.delivery.transports import Connection, Outgoing, Transport
from newsletter.models import (
    Campaign,
    CampaignState,
    Delivery,
    DeliveryState,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from newsletter.subscriptions.store import sectors_of, set_status

Progress = Callable[[int], None]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base: dt.timedelta = dt.timedelta(minutes=1)
    cap: dt.timedelta = dt.timedelta(hours=2)

    def next_attempt(self, attempts: int, now: dt.datetime, rng: random.Random) -> dt.datetime:
        """Exponential backoff with full jitter in [0.5, 1.5) of the step, so retries spread out."""
        step = min(self.base * (2 ** max(attempts - 1, 0)), self.cap)
        return now + step * (0.5 + rng.random())


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
    replies: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "campaign": self.campaign, "sent": self.sent, "failed": self.failed,
            "skipped": self.skipped, "retry": self.retry, "unknown": self.unknown,
            "profiles": self.profiles, "bytes": self.bytes, "seconds": round(self.seconds, 3),
            "state": self.state, "reason": self.reason,
        }  # fmt: skip


@dataclass(frozen=True)
class _Job:
    delivery_id: int
    subscriber_id: int
    outgoing: Outgoing | None  # None: skip (no longer active)
    profile: str = ""
    message_id: str = ""


class SendEngine:
    def __init__(
        self,
        *,
        db: Engine,
        context: IssueContext,
        transport: Transport,
        batch_size: int = 200,
        retry: RetryPolicy = RetryPolicy(),
        clock: Callable[[], dt.datetime] = utcnow,
        rng: random.Random | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.db = db
        self.ctx = context
        self.transport = transport
        self.batch_size = batch_size
        self.retry = retry
        self.clock = clock
        self.rng = rng or random.Random()
        self.progress = progress
        self.connections: list[Connection] = []

    async def run(self, campaign_id: int) -> SendReport:
        started = time.perf_counter()
        report = SendReport(campaign=campaign_id)
        renders_before = self.ctx.cache.renders
        with Session(self.db, expire_on_commit=False) as session:
            report.recovered_unknown = mark_in_flight_unknown(session, campaign_id)
            self._set_state(session, campaign_id, CampaignState.SENDING, "")
        try:
            while True:
                with Session(self.db, expire_on_commit=False) as session:
                    campaign = session.get(Campaign, campaign_id)
                    if campaign is None or campaign.state != CampaignState.SENDING:
                        break
                    batch = self._claim(session, campaign_id)
                    if not batch:
                        break
                    jobs = self._prepare(session, campaign_id, batch)
                replies = await self._send_all(jobs)
                with Session(self.db, expire_on_commit=False) as session:
                    paused = self._record(session, campaign_id, jobs, replies, report)
                if self.progress:
                    self.progress(len(jobs))
                if paused:
                    break
        finally:
            await self._close()
        with Session(self.db, expire_on_commit=False) as session:
            self._finish(session, campaign_id, report)
        report.profiles = self.ctx.cache.renders - renders_before
        report.seconds = time.perf_counter() - started
        return report

    def _claim(self, session: Session, campaign_id: int) -> list[Delivery]:
        now = self.clock()
        due = (col(Delivery.state) == DeliveryState.QUEUED) | (
            (col(Delivery.state) == DeliveryState.RETRY) & (col(Delivery.next_attempt_at) <= now)
        )
        rows = list(
            session.exec(
                select(Delivery)
                .where(Delivery.campaign_id == campaign_id, due)
                .order_by(col(Delivery.id))
                .limit(self.batch_size)
                # PostgreSQL: workers skip each other's rows; SQLite ignores it (one worker).
                .with_for_update(skip_locked=True)
            )
        )
        for row in rows:
            row.state = DeliveryState.SENDING
            row.updated_at = now
            session.add(row)
        session.commit()
        return rows

    def _prepare(self, session: Session, campaign_id: int, batch: Sequence[Delivery]) -> list[_Job]:
        ids = [row.subscriber_id for row in batch]
        subscribers = {
            s.id: s for s in session.exec(select(Subscriber).where(col(Subscriber.id).in_(ids)))
        }
        sectors = sectors_of(session, ids)
        preview = self.transport.name == "file"
        jobs: list[_Job] = []
        for row in batch:
            assert row.id is not None
            sub = subscribers.get(row.subscriber_id)
            if sub is None or sub.status != SubscriberStatus.ACTIVE:
                jobs.append(_Job(row.id, row.subscriber_id, None))
                continue
            recipient = RecipientData(
                subscriber_id=row.subscriber_id, email=sub.email, name=sub.name,
                language=sub.language, embassy=sub.embassy_code,
                sectors=sectors.get(row.subscriber_id, ()), token_key=sub.token_key,
            )  # fmt: skip
            composed = compose(self.ctx, recipient, campaign_id=campaign_id, preview=preview)
            jobs.append(
                _Job(row.id, row.subscriber_id, composed.outgoing, composed.profile, composed.message_id)
            )
        return jobs

    async def _send_all(self, jobs: Sequence[_Job]) -> dict[int, Reply]:
        queue: asyncio.Queue[_Job] = asyncio.Queue()
        for job in jobs:
            if job.outgoing is not None:
                queue.put_nowait(job)
        replies: dict[int, Reply] = {}
        wanted = min(self.transport.max_connections, queue.qsize())
        while len(self.connections) < wanted:
            self.connections.append(await self.transport.connect())

        async def worker(connection: Connection) -> None:
            while not queue.empty():
                job = queue.get_nowait()
                assert job.outgoing is not None
                replies[job.delivery_id] = await connection.send(job.outgoing)

        await asyncio.gather(*(worker(c) for c in self.connections[:wanted]))
        return replies

    def _record(
        self,
        session: Session,
        campaign_id: int,
        jobs: Sequence[_Job],
        replies: dict[int, Reply],
        report: SendReport,
    ) -> bool:
        """Write every outcome of a batch in one transaction; True when the campaign must pause."""
        now = self.clock()
        pause_reason = ""
        rows = {r.id: r for r in session.exec(select(Delivery).where(col(Delivery.id).in_([j.delivery_id for j in jobs])))}
        for job in jobs:
            row = rows[job.delivery_id]
            row.updated_at = now
            row.profile, row.message_id = job.profile, job.message_id
            if job.outgoing is None:
                row.state, row.reply = DeliveryState.SKIPPED, "subscriber no longer active"
                report.skipped += 1
                session.add(row)
                continue
            reply = replies[job.delivery_id]
            verdict = classify(reply)
            row.reply = str(reply)[:500]
            if verdict is Verdict.PAUSE:
                # Our fault, not the recipient's: put the row back untouched.
                row.state = DeliveryState.QUEUED
                pause_reason = str(reply)
                session.add(row)
                continue
            row.attempts += 1
            if verdict is Verdict.SENT:
                row.state, row.sent_at = DeliveryState.SENT, now
                report.sent += 1
                report.bytes += len(job.outgoing.data)
            elif verdict is Verdict.RETRY and row.attempts < self.retry.max_attempts:
                row.state = DeliveryState.RETRY
                row.next_attempt_at = self.retry.next_attempt(row.attempts, now, self.rng)
            else:
                row.state = DeliveryState.FAILED
                report.failed += 1
                if verdict is Verdict.BOUNCE:
                    subscriber = session.get(Subscriber, job.subscriber_id)
                    if subscriber is not None:
                        set_status(
                            session, subscriber, SubscriberStatus.BOUNCED,
                            actor="smtp", via="bounce", detail=str(reply)[:300],
                        )  # fmt: skip
            session.add(row)
        if pause_reason:
            self._set_state(session, campaign_id, CampaignState.PAUSED, pause_reason, commit=False)
        session.commit()
        return bool(pause_reason)

    def _set_state(
        self, session: Session, campaign_id: int, state: CampaignState, reason: str, *, commit: bool = True
    ) -> None:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            return
        if campaign.state in (CampaignState.CANCELLED,):
            return
        campaign.state, campaign.reason = state, reason
        if state == CampaignState.SENDING and campaign.started_at is None:
            campaign.started_at = self.clock()
        session.add(campaign)
        if commit:
            session.commit()

    def _finish(self, session: Session, campaign_id: int, report: SendReport) -> None:
        by_state = counts(session, campaign_id)
        report.retry = by_state.get(DeliveryState.RETRY, 0)
        report.unknown = by_state.get(DeliveryState.UNKNOWN, 0)
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        open_rows = sum(by_state.get(s, 0) for s in (DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.RETRY))
        if campaign.state == CampaignState.SENDING and open_rows == 0:
            campaign.state, campaign.finished_at = CampaignState.FINISHED, self.clock()
            session.add(campaign)
            session.commit()
        report.state, report.reason = str(campaign.state), campaign.reason

    async def _close(self) -> None:
        connections, self.connections = self.connections, []
        for connection in connections:
            await connection.close()
