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
from dataclasses import dataclass, field

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from newsletter.config import DeliverySettings
from newsletter.delivery.campaigns import counts, mark_lost_unknown
from newsletter.delivery.compose import IssueContext, RecipientData, audience_for, compose
from newsletter.delivery.replies import Reply, Verdict, classify
from newsletter.delivery.throttle import Throttle
from newsletter.delivery.transports import CONNECTION_FAULT, Connection, Outgoing, Transport
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
from newsletter.tailor import profile_key, select_items

Progress = Callable[[int], None]
# This many 421 replies in one batch means the server is shedding us: pause, don't hammer it.
BURST_421 = 3


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
        step = min(self.base * (2 ** max(attempts - 1, 0)), self.cap)
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


@dataclass(frozen=True)
class _Job:
    delivery_id: int
    subscriber_id: int
    outgoing: Outgoing | None  # None: skip (no longer active)
    profile: str = ""
    message_id: str = ""


class SendEngine:
    """Sends one campaign's due rows; safe to run beside other engines on PostgreSQL."""

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
        self.connections: list[Connection] = []

    async def run(self, campaign_id: int) -> SendReport:
        started = time.perf_counter()
        report = SendReport(campaign=campaign_id)
        renders_before = self.ctx.cache.renders
        sqlite = self.db.dialect.name == "sqlite"
        with Session(self.db, expire_on_commit=False) as session:
            report.recovered_unknown = mark_lost_unknown(
                session, campaign_id, now=self.clock(), everyone=sqlite
            )
            self._skip_missed(session, campaign_id, report)
            self._plan_profiles(session, campaign_id)
            self._set_state(
                session, campaign_id, CampaignState.SENDING, "", only_from=CampaignState.READY
            )
        try:
            while not self.stop.is_set():
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
                    self.progress(len(replies) + sum(1 for j in jobs if j.outgoing is None))
                if paused:
                    break
        finally:
            await self._close()
        with Session(self.db, expire_on_commit=False) as session:
            self._finish(session, campaign_id, report)
        report.profiles = self.ctx.cache.renders - renders_before
        report.seconds = time.perf_counter() - started
        return report

    def _due(self, campaign_id: int, now: dt.datetime) -> object:
        waiting = (col(Delivery.state) == DeliveryState.QUEUED) | (
            (col(Delivery.state) == DeliveryState.RETRY) & (col(Delivery.next_attempt_at) <= now)
        )
        in_window = (col(Delivery.not_before).is_(None) | (col(Delivery.not_before) <= now)) & (
            col(Delivery.not_after).is_(None) | (col(Delivery.not_after) > now)
        )
        return (col(Delivery.campaign_id) == campaign_id) & waiting & in_window

    def _skip_missed(self, session: Session, campaign_id: int, report: SendReport) -> None:
        """Rows whose send window closed while nobody was sending: missed, never sent late."""
        now = self.clock()
        result = session.execute(
            update(Delivery)
            .where(
                col(Delivery.campaign_id) == campaign_id,
                col(Delivery.state).in_([DeliveryState.QUEUED, DeliveryState.RETRY]),
                col(Delivery.not_after) <= now,
            )
            .values(state=DeliveryState.SKIPPED, reply="missed: send window closed", updated_at=now)
        )
        session.commit()
        report.skipped += int(result.rowcount or 0)

    def _plan_profiles(self, session: Session, campaign_id: int, chunk: int = 2000) -> None:
        """Note each unsent row's profile, so claims come grouped by profile.

        Rows of one profile then go out together and the bounded profile caches stay small,
        whatever the number of profiles: memory stays flat as the list grows. The profile is
        computed again at send time, so a subscriber who changed sectors meanwhile is still right.
        """
        after = 0
        while True:
            rows = session.exec(
                select(Delivery.id, Subscriber.id, Subscriber.language, Subscriber.embassy_code)
                .join(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
                .where(
                    col(Delivery.campaign_id) == campaign_id,
                    col(Delivery.profile) == "",
                    col(Delivery.state).in_([DeliveryState.QUEUED, DeliveryState.RETRY]),
                    col(Delivery.id) > after,
                )
                .order_by(col(Delivery.id))
                .limit(chunk)
            ).all()
            if not rows:
                return
            sectors = sectors_of(session, [sid for _, sid, _, _ in rows if sid is not None])
            updates = []
            for delivery_id, subscriber_id, language, embassy in rows:
                recipient = RecipientData(
                    subscriber_id or 0,
                    "",
                    "",
                    language,
                    embassy,
                    sectors.get(subscriber_id or 0, ()),
                    "",
                )
                selection = select_items(
                    self.ctx.issue, audience_for(recipient, self.ctx.embassies)
                )
                updates.append({"id": delivery_id, "profile": profile_key(selection, language)})
            session.execute(update(Delivery), updates)
            session.commit()
            after = int(rows[-1][0] or 0)

    def _claim(self, session: Session, campaign_id: int) -> list[Delivery]:
        now = self.clock()
        rows = list(
            session.exec(
                select(Delivery)
                .where(self._due(campaign_id, now))
                .order_by(col(Delivery.profile), col(Delivery.id))
                .limit(self.batch_size)
                # PostgreSQL: workers skip each other's rows; SQLite ignores it (one worker).
                .with_for_update(skip_locked=True)
            )
        )
        for row in rows:
            row.state, row.worker, row.lease_until = (
                DeliveryState.SENDING,
                self.worker,
                now + self.lease,
            )
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
                _Job(
                    row.id,
                    row.subscriber_id,
                    composed.outgoing,
                    composed.profile,
                    composed.message_id,
                )
            )
        return jobs

    async def _send_all(self, jobs: Sequence[_Job]) -> dict[int, Reply]:
        """Send over up to `max_connections` connections; after `stop`, start nothing new."""
        queue: asyncio.Queue[_Job] = asyncio.Queue()
        for job in jobs:
            if job.outgoing is not None:
                queue.put_nowait(job)
        replies: dict[int, Reply] = {}
        wanted = min(self.transport.max_connections, queue.qsize())
        while len(self.connections) < wanted:
            self.connections.append(await self.transport.connect())

        async def worker(connection: Connection) -> None:
            while not queue.empty() and not self.stop.is_set():
                job = queue.get_nowait()
                assert job.outgoing is not None
                await self.throttle.acquire(job.outgoing.rcpt)
                replies[job.delivery_id] = await connection.send(job.outgoing)

        await asyncio.gather(*(worker(c) for c in self.connections[:wanted]))
        return replies

    def _pause_reason(self, replies: dict[int, Reply]) -> str:
        verdicts = [(r, classify(r)) for r in replies.values()]
        ours = next((r for r, v in verdicts if v is Verdict.PAUSE), None)
        if ours is not None:
            return str(ours)
        if sum(1 for r in replies.values() if r.code == 421) >= BURST_421:
            return "the server keeps answering 421 (too busy or rate limited); resume later"
        if replies and all(r.code == CONNECTION_FAULT for r in replies.values()):
            return f"cannot reach the SMTP server: {next(iter(replies.values())).text}"
        return ""

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
        pause_reason = self._pause_reason(replies)
        ids = [j.delivery_id for j in jobs]
        rows = {r.id: r for r in session.exec(select(Delivery).where(col(Delivery.id).in_(ids)))}
        for job in jobs:
            row = rows[job.delivery_id]
            row.updated_at, row.worker, row.lease_until = now, "", None
            row.profile, row.message_id = job.profile, job.message_id
            reply = replies.get(job.delivery_id)
            if job.outgoing is None:
                row.state, row.reply = DeliveryState.SKIPPED, "subscriber no longer active"
                report.skipped += 1
            elif reply is None:
                # Stopped before this one was sent: hand it back untouched.
                row.state = DeliveryState.QUEUED
            elif pause_reason and classify(reply) is not Verdict.SENT:
                # The fault is ours or the server's, not the recipient's: no attempt is counted.
                row.state, row.reply = DeliveryState.QUEUED, str(reply)[:500]
            else:
                self._apply(session, row, job, reply, now, report)
            session.add(row)
        if pause_reason:
            self._set_state(session, campaign_id, CampaignState.PAUSED, pause_reason, commit=False)
        session.commit()
        return bool(pause_reason)

    def _apply(
        self,
        session: Session,
        row: Delivery,
        job: _Job,
        reply: Reply,
        now: dt.datetime,
        report: SendReport,
    ) -> None:
        verdict = classify(reply)
        report.replies[reply.code] += 1
        row.attempts += 1
        row.first_attempt_at = row.first_attempt_at or now
        row.reply = str(reply)[:500]
        if verdict is Verdict.SENT:
            assert job.outgoing is not None
            row.state, row.sent_at = DeliveryState.SENT, now
            report.sent += 1
            report.bytes += len(job.outgoing.data)
        elif verdict is Verdict.RETRY and not self.retry.gives_up(
            row.attempts, row.first_attempt_at, now
        ):
            row.state = DeliveryState.RETRY
            row.next_attempt_at = self.retry.next_attempt(row.attempts, now, self.rng)
        else:
            row.state = DeliveryState.FAILED
            report.failed += 1
            subscriber = session.get(Subscriber, job.subscriber_id)
            if verdict is Verdict.BOUNCE and subscriber is not None:
                set_status(
                    session, subscriber, SubscriberStatus.BOUNCED,
                    actor="smtp", via="bounce", detail=str(reply)[:300],
                )  # fmt: skip

    def _set_state(
        self,
        session: Session,
        campaign_id: int,
        state: CampaignState,
        reason: str,
        *,
        commit: bool = True,
        only_from: CampaignState | None = None,
    ) -> None:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.state == CampaignState.CANCELLED:
            return
        if only_from is not None and campaign.state != only_from:
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
