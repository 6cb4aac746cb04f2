"""`newsletter run`: the scheduler (while this process holds its lock), a sender, web pages."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator

import uvicorn

from newsletter.actors import Actor
from newsletter.config import Settings
from newsletter.db import Engine, Session, database_problem, describe, is_sqlite
from newsletter.delivery.engine import SendReport
from newsletter.delivery.locks import SenderBusyError, SenderLock
from newsletter.delivery.transports import Transport
from newsletter.errors import NewsletterError
from newsletter.models import utcnow
from newsletter.scheduling import jobs
from newsletter.scheduling.digests import record_received
from newsletter.scheduling.leader_lock import SchedulerLock
from newsletter.services import inbox
from newsletter.services.worker import (
    Backoff,
    Worker,
    one_line,
    one_line_database_faults,
    wait_or_stop,
)

Say = Callable[[str], None]


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside `run`: the daemon owns SIGINT and SIGTERM, so uvicorn must not take them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def web_server(settings: Settings, host: str, port: int) -> EmbeddedServer:
    # Imported here: the web pages are optional for `run`, and heavy to import.
    from newsletter.web import create_app

    config = uvicorn.Config(
        create_app(settings), host=host, port=port, proxy_headers=False, server_header=False,
        log_level="warning",
    )  # fmt: skip
    return EmbeddedServer(config)


def admin_server(settings: Settings, host: str, port: int) -> EmbeddedServer:
    """The staff console (`run --admin`) on a listener of its own, beside the web pages."""
    from newsletter.console import create_admin_app

    config = uvicorn.Config(
        create_admin_app(settings), host=host, port=port, proxy_headers=False,
        server_header=False, log_level="warning",
    )  # fmt: skip
    return EmbeddedServer(config)


class Daemon:
    """Runs until `stop`: then it stops claiming, lets in-flight messages finish, hands back
    unsent claimed rows (the engine does), shuts the scheduler down and releases its locks."""

    def __init__(
        self,
        settings: Settings,
        db: Engine,
        *,
        stop: asyncio.Event,
        say: Say,
        web: EmbeddedServer | None = None,
        transport: Transport | None = None,
        admin: EmbeddedServer | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.stop = stop
        self.say = say
        self.web = web
        self.admin = admin
        self.transport = transport
        self.wake = asyncio.Event()
        self.leading = asyncio.Event()
        self.database = describe(db.url)

    async def run(self) -> None:
        try:
            with one_line_database_faults():
                await self._run()
        except ExceptionGroup as failed:
            # One part failed and the others were stopped: report that one cause, as a CLI
            # command would (a NewsletterError becomes the one-line `error: ...`).
            raise failed.exceptions[0] from None

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch_stop())
            group.create_task(self._lead())
            group.create_task(self._send())
            if self.settings.inbox.host and self.settings.inbox.fetch_minutes > 0:
                group.create_task(self._fetch_inbox())
            for server in (self.web, self.admin):
                if server is not None:
                    group.create_task(server.serve())

    async def _watch_stop(self) -> None:
        await self.stop.wait()
        self.wake.set()
        self.leading.set()  # releases a sender still waiting for the lock on SQLite
        for server in (self.web, self.admin):
            if server is not None:
                server.should_exit = True

    async def _nap(self, seconds: float) -> None:
        """Sleep until `seconds` pass, the scheduler wakes us, or we are told to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)
        if not self.stop.is_set():
            self.wake.clear()

    async def _sleep(self, seconds: float) -> None:
        await wait_or_stop(self.stop, seconds)

    async def _lead(self) -> None:
        lock = SchedulerLock(self.db)
        retry = self.settings.schedule.lock_retry_seconds
        backoff = Backoff()
        told = False
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    if lock.acquire():
                        self.say(f"scheduler: this process fires jobs ({lock.describe()} held)")
                        await self._schedule(lock)
                        told = False
                        backoff.reset()
                        continue
                except Exception as exc:
                    problem = database_problem(exc)
                    if problem is None:
                        raise
                    # Whatever the lock was, it is given back: another `run` may take over.
                    lock.release()
                    delay = backoff.next_delay(time.monotonic() - started)
                    self.say(
                        f"scheduler: {self.database} unavailable: {problem}; "
                        f"not firing jobs, retrying in {delay:g} s"
                    )
                    await self._sleep(delay)
                    told = False
                    continue
                if not told:
                    self.say(
                        f"scheduler: another `newsletter run` holds the {lock.describe()}; "
                        f"standing by, not firing jobs, retrying every {retry:g} s"
                    )
                    told = True
                await self._sleep(retry)
        finally:
            lock.release()

    async def _schedule(self, lock: SchedulerLock) -> None:
        grace = dt.timedelta(hours=self.settings.schedule.misfire_grace_hours)
        catch_up = dt.timedelta(days=self.settings.delivery.catch_up_days)
        context = jobs.JobContext(db=self.db, wake=self.wake.set, grace=grace, catch_up=catch_up)
        jobs.bind(context)
        scheduler = jobs.make_scheduler(self.db)
        # Paused while lost jobs are repaired; resuming then runs (or reports missed) whatever
        # fell due while no scheduler was running.
        scheduler.start(paused=True)
        try:
            for note in jobs.reconcile(scheduler, context):
                self.say(f"scheduler: {note}")
            scheduler.resume()
            self.leading.set()
            self.wake.set()
            while not self.stop.is_set():
                await self._sleep(self.settings.schedule.poll_seconds)
                if not lock.alive():
                    self.say("scheduler: lost the scheduler lock; standing by")
                    break
                # Jobs added by other commands are only seen when the scheduler looks again.
                scheduler.wakeup()
        finally:
            if not self.stop.is_set():
                self.leading.clear()
            scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the loop's next turn
            jobs.unbind()

    async def _send(self) -> None:
        if is_sqlite(self.db):
            # SQLite allows one sender: it belongs to the process that holds the scheduler.
            await self.leading.wait()
        worker = Worker(
            self.settings, self.db, transport=self.transport, stop=self.stop,
            on_report=self.reported, say=lambda line: self.say(f"sender: {line}"),
        )  # fmt: skip
        told = False
        while not self.stop.is_set():
            try:
                with SenderLock(self.db):
                    await self._send_rounds(worker)
                return
            except SenderBusyError as exc:
                if not told:
                    self.say(f"sender: {exc}; retrying")
                    told = True
                await self._sleep(self.settings.schedule.lock_retry_seconds)

    async def _send_rounds(self, worker: Worker) -> None:
        while not self.stop.is_set():
            # None: a database fault, already said and waited out; go straight back to work.
            handled = await worker.attempt()
            if handled == 0:
                await self._nap(self.settings.delivery.poll_seconds)

    async def _fetch_inbox(self) -> None:
        """`inbox fetch` every [inbox] fetch_minutes, by the process that fires the jobs (two
        readers of one mailbox would only find each other's work done, but need not try)."""
        every = self.settings.inbox.fetch_minutes * 60
        while not self.stop.is_set():
            await self.leading.wait()
            if self.stop.is_set():
                return
            try:
                report = await asyncio.to_thread(
                    inbox.fetch_inbox, self.settings, actor=Actor.system("run", "inbox"), db=self.db
                )
                if report.messages:
                    counts = ", ".join(
                        f"{n} {k.replace('_', ' ')}" for k, n in report.summary.items() if n
                    )
                    self.say(f"inbox: {counts}")
            except Exception as exc:
                if not isinstance(exc, NewsletterError) and database_problem(exc) is None:
                    raise
                self.say(f"inbox: {one_line(exc)}; fetching again in {every:g} s")
            await self._sleep(every)

    def reported(self, report: SendReport) -> None:
        """After each campaign round: say what was sent, and write the items ledger."""
        self.say(
            f"campaign {report.campaign}: {report.sent} sent, {report.failed} failed, "
            f"{report.skipped} skipped ({report.state})"
        )
        if report.sent:
            # The items ledger is written as digests go out, so the next digest skips them.
            try:
                with Session(self.db, expire_on_commit=False) as session:
                    record_received(session, now=utcnow(), campaign_id=report.campaign)
                    session.commit()
            except Exception as exc:
                if database_problem(exc) is not None:
                    raise  # the sender waits it out and the next round writes it
                # The mail went out; a digest may repeat these items, which is no reason to stop.
                self.say(f"campaign {report.campaign}: items ledger not written: {one_line(exc)}")
