"""A long-running sender: finds campaigns with due rows and sends them until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable

from sqlalchemy import Engine, exists
from sqlmodel import Session, col, select

from newsletter import runtime
from newsletter.config import Settings
from newsletter.delivery.compose import IssueContext
from newsletter.delivery.engine import SendEngine, SendReport, worker_name
from newsletter.delivery.locks import SenderLock
from newsletter.delivery.transports import Transport
from newsletter.models import Campaign, CampaignState, Delivery, DeliveryState, IssueRecord


def campaigns_with_work(session: Session) -> list[tuple[int, str]]:
    """(campaign id, issue slug) of sending campaigns that still have rows to send or retry."""
    live = (
        select(Delivery.id)
        .where(
            col(Delivery.campaign_id) == col(Campaign.id),
            col(Delivery.state).in_(
                [DeliveryState.QUEUED, DeliveryState.RETRY, DeliveryState.SENDING]
            ),
        )
        .limit(1)
    )
    rows = session.exec(
        select(Campaign.id, IssueRecord.slug)
        .join(IssueRecord, col(IssueRecord.id) == col(Campaign.issue_id))
        .where(col(Campaign.state) == CampaignState.SENDING, exists(live))
        .order_by(col(Campaign.id))
    ).all()
    return [(int(cid), str(slug)) for cid, slug in rows if cid is not None]


class Worker:
    def __init__(
        self,
        settings: Settings,
        db: Engine,
        *,
        transport: Transport | None = None,
        stop: asyncio.Event | None = None,
        on_report: Callable[[SendReport], None] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.transport = transport or runtime.make_transport(settings)
        self.stop = stop or asyncio.Event()
        self.on_report = on_report
        self.name = worker_name()
        # Keyed by the issue's text too: an issue corrected after it was scheduled (possible until
        # its first message is sent) must not go out in its old form from a long-running worker.
        self.contexts: dict[tuple[str, str], IssueContext] = {}

    def _context(self, session: Session, slug: str) -> IssueContext:
        record = session.exec(select(IssueRecord).where(IssueRecord.slug == slug)).one()
        key = (slug, hashlib.blake2b(record.source_yaml.encode(), digest_size=16).hexdigest())
        if key not in self.contexts:
            self.contexts = {k: v for k, v in self.contexts.items() if k[0] != slug}
            self.contexts[key] = runtime.issue_context(session, self.settings, slug)
        return self.contexts[key]

    async def round(self) -> int:
        """Send every campaign's due rows once; the number of messages handled."""
        with Session(self.db, expire_on_commit=False) as session:
            work = [
                (cid, self._context(session, slug)) for cid, slug in campaigns_with_work(session)
            ]
        handled = 0
        for campaign_id, context in work:
            if self.stop.is_set():
                break
            engine = SendEngine(
                db=self.db, context=context, transport=self.transport,
                delivery=self.settings.delivery, stop=self.stop, worker=self.name,
            )  # fmt: skip
            report = await engine.run(campaign_id)
            handled += report.sent + report.failed + report.skipped
            if self.on_report and (report.sent or report.failed or report.skipped):
                self.on_report(report)
        return handled

    async def run(self, *, once: bool = False) -> None:
        """Until `stop`: a round, then a pause of `poll_seconds` when there was nothing to do."""
        with SenderLock(self.db):
            while not self.stop.is_set():
                handled = await self.round()
                if once:
                    return
                if not handled:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self.stop.wait(), self.settings.delivery.poll_seconds
                        )
