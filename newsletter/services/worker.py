"""A long-running sender: finds campaigns with due rows and sends them until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from newsletter import runtime
from newsletter.config import Settings
from newsletter.db import DatabaseUnavailableError, Engine, Session, database_problem, describe
from newsletter.delivery.campaigns import campaigns_with_work
from newsletter.delivery.compose import IssueContext
from newsletter.delivery.engine import SendEngine, SendReport, worker_name
from newsletter.delivery.locks import SenderLock
from newsletter.delivery.send_facts import note_transport
from newsletter.delivery.transports import Transport
from newsletter.errors import NewsletterError
from newsletter.issues import issue_source
from newsletter.models import Campaign, CampaignState
from newsletter.states import can_move, move
from newsletter.subscriptions.bounce_policy import record_smtp_bounce

Say = Callable[[str], None]


def say_on_stderr(line: str) -> None:
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()


@dataclass
class Backoff:
    """Waits between attempts on a database that failed: doubling from `first` up to `cap`.

    A fault after a round that ran at least as long as the last wait is a new incident (the
    database answered in between: a terminated connection, not a server that is down), so the
    wait starts again from `first`.
    """

    first: float = 1.0
    cap: float = 60.0
    # `worker --once` gives up after this many faults in a row (a cron job should not hang);
    # the long-running loops never do.
    give_up_after: int = 8
    failures: int = 0
    last: float = 0.0

    def next_delay(self, lasted: float = 0.0) -> float:
        """The wait after a fault that came `lasted` seconds into the attempt."""
        if self.failures and lasted >= self.last:
            self.reset()
        delay: float = min(self.cap, self.first * 2.0 ** min(self.failures, 32))
        self.failures += 1
        self.last = delay
        return delay

    def reset(self) -> None:
        self.failures = 0
        self.last = 0.0


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def one_line(error: BaseException) -> str:
    """An error as one line a staff member can read: its message, with its type if not ours."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    if isinstance(error, NewsletterError) and text:
        return text[:300]
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__


class OneLineDatabaseFaults(logging.Filter):
    """Libraries log a database fault with a traceback or the driver's multi-line text (APScheduler
    for its job store and jobs, SQLAlchemy's pool for a connection that died while checked
    out): while the loops wait such faults out, each is one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            problem = database_problem(record.exc_info[1])
            if problem is not None:
                record.msg, record.args = f"{record.getMessage()}: {problem}", None
                record.exc_info, record.exc_text = None, None
        elif isinstance(record.args, tuple) and any(
            isinstance(a, BaseException) for a in record.args
        ):
            record.args = tuple(
                (database_problem(a) or a) if isinstance(a, BaseException) else a
                for a in record.args
            )
        return True


@contextlib.contextmanager
def one_line_database_faults() -> Iterator[None]:
    """The filter on every handler that prints our records (root's) and uvicorn's own."""
    handlers = [*logging.getLogger().handlers, *logging.getLogger("uvicorn").handlers]
    faults = OneLineDatabaseFaults()
    for handler in handlers:
        handler.addFilter(faults)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(faults)


@dataclass
class Tally:
    """One campaign's outcome over a worker's rounds."""

    slug: str
    sent: int = 0
    failed: int = 0
    deferred: int = 0  # rows waiting to be retried after a temporary refusal
    state: str = ""


class Worker:
    def __init__(
        self,
        settings: Settings,
        db: Engine,
        *,
        transport: Transport | None = None,
        stop: asyncio.Event | None = None,
        on_report: Callable[[SendReport], None] | None = None,
        say: Say = say_on_stderr,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.transport = transport or runtime.make_transport(settings)
        self.stop = stop or asyncio.Event()
        self.on_report = on_report
        self.say = say
        self.backoff = backoff or Backoff()
        self.name = worker_name()
        self.database = describe(db.url)
        # Campaigns this worker paused after an error, with the reason (said once, not per round).
        self.broken: dict[int, str] = {}
        # Keyed by the issue's text too: an issue corrected after it was scheduled (possible until
        # its first message is sent) must not go out in its old form from a long-running worker.
        self.contexts: dict[tuple[str, str], IssueContext] = {}
        self.totals: dict[int, Tally] = {}

    def _context(self, slug: str) -> IssueContext:
        with Session(self.db, expire_on_commit=False) as session:
            source = issue_source(session, slug)
            key = (slug, hashlib.blake2b(source.encode(), digest_size=16).hexdigest())
            if key not in self.contexts:
                self.contexts = {k: v for k, v in self.contexts.items() if k[0] != slug}
                self.contexts[key] = runtime.issue_context(session, self.settings, slug)
            return self.contexts[key]

    async def round(self) -> int:
        """Send every campaign's due rows once; the number of messages handled.

        A campaign that fails for any reason but the database is paused with that reason and
        the round goes on with the next; a database fault ends the round (see `attempt`).
        """
        with Session(self.db, expire_on_commit=False) as session:
            work = campaigns_with_work(session)
        handled = 0
        for campaign_id, slug in work:
            if self.stop.is_set():
                break
            try:
                engine = SendEngine(
                    db=self.db, context=self._context(slug), transport=self.transport,
                    delivery=self.settings.delivery, bounced=record_smtp_bounce, stop=self.stop,
                    worker=self.name,
                )  # fmt: skip
                report = await engine.run(campaign_id)
                if report.sent:
                    await asyncio.to_thread(self._note_transport, campaign_id)
            except Exception as exc:
                if database_problem(exc) is not None:
                    raise
                await asyncio.to_thread(self._set_aside, campaign_id, slug, exc)
                continue
            self.broken.pop(campaign_id, None)
            self.tally(slug, report)
            handled += report.sent + report.failed + report.skipped
            if self.on_report and (report.sent or report.failed or report.skipped):
                self.on_report(report)
        return handled

    def _note_transport(self, campaign_id: int) -> None:
        with Session(self.db) as session:
            note_transport(session, campaign_id, self.transport.name)
            session.commit()

    def tally(self, slug: str, report: SendReport) -> None:
        """Add a round's outcome to the campaign's totals (what `summary` says)."""
        total = self.totals.setdefault(report.campaign, Tally(slug))
        total.sent += report.sent
        total.failed += report.failed
        total.deferred = report.retry  # rows to retry now, not a sum over rounds
        total.state = report.state

    def summary(self) -> str:
        """One line: messages sent, failed and deferred per campaign since this worker started."""
        if not self.totals:
            return f"worker {self.name}: no campaign had rows due"
        per = "; ".join(
            f"campaign {c} ({t.slug}): {t.sent} sent, {t.failed} failed, {t.deferred} deferred"
            f" ({t.state})"
            for c, t in sorted(self.totals.items())
        )
        return f"worker {self.name}: {per}"

    def _set_aside(self, campaign_id: int, slug: str, error: Exception) -> None:
        """Pause a campaign that cannot be sent, on a fresh session, with a reason staff can act on."""
        reason = f"stopped by an error: {one_line(error)}"[:500]
        paused = False
        try:
            with Session(self.db) as session:
                # Locked while it is read and moved: a staff cancel in between is not undone.
                campaign = session.get(Campaign, campaign_id, with_for_update=True)
                if campaign is not None and can_move(campaign.state, CampaignState.PAUSED):
                    move(campaign, CampaignState.PAUSED, reason=reason)
                    session.add(campaign)
                    paused = True
                session.commit()
        except Exception as failed:
            if self.broken.get(campaign_id) != reason:
                self.say(
                    f"campaign {campaign_id} ({slug}): {reason}; could not pause it either "
                    f"({one_line(failed)}); other campaigns go on"
                )
            self.broken[campaign_id] = reason
            return
        if paused:
            self.say(
                f"campaign {campaign_id} ({slug}): paused, {reason}; fix it, then "
                f"`newsletter campaign resume {campaign_id}`"
            )
        elif self.broken.get(campaign_id) != reason:
            self.say(f"campaign {campaign_id} ({slug}): {reason}; other campaigns go on")
        self.broken[campaign_id] = reason

    async def attempt(self, *, give_up: bool = False) -> int | None:
        """One round; after a database fault: say so in one line, back off, reconnect, None.

        `give_up`: after `backoff.give_up_after` faults in a row, `DatabaseUnavailableError`.
        """
        started = time.monotonic()
        try:
            handled = await self.round()
        except Exception as exc:
            problem = database_problem(exc)
            if problem is None:
                raise
            lasted = time.monotonic() - started
            if give_up and self.backoff.failures >= self.backoff.give_up_after:
                if lasted < self.backoff.last:
                    raise DatabaseUnavailableError(self.database, problem) from None
            await self.back_off(problem, lasted)
            return None
        self.backoff.reset()
        return handled

    async def back_off(self, problem: str, lasted: float = 0.0) -> None:
        """Wait out a database fault: the pool is dropped, so the next round connects afresh."""
        delay = self.backoff.next_delay(lasted)
        self.say(f"{self.database} unavailable: {problem}; retrying in {delay:g} s")
        # Connections of the pool may all be dead (a restarted server, terminated backends).
        await asyncio.to_thread(self.db.dispose)
        await wait_or_stop(self.stop, delay)

    async def run(self, *, once: bool = False) -> None:
        """Until `stop`: a round, then a pause of `poll_seconds` when there was nothing to do.

        Database faults are waited out; `once` (until one round completes) gives up on them
        after `backoff.give_up_after` in a row.
        """
        with SenderLock(self.db):
            while not self.stop.is_set():
                handled = await self.attempt(give_up=once)
                if handled is None:
                    continue
                if once:
                    self.say(self.summary())
                    return
                if not handled:
                    await wait_or_stop(self.stop, self.settings.delivery.poll_seconds)
