"""Claim and compose the next batch of ledger rows: on a thread of the sender, or in a helper process.

Composing (tailoring, rendering each profile, splicing each recipient's values into the encoded
message) is about half of a send's CPU, and one Python process runs one thread at a time. For a big
campaign the engine hands claim+compose to one helper process, so a second core composes the next
batch while the sender's own process puts the current one on the wire and records the outcomes.

The helper is part of the same sender, not a second one: it leases rows in the sender's worker
name and at the sender's clock (`now` comes with every call; the helper never reads a clock), and it
never marks a row `sending` nor records an outcome, which stays the engine's job, window by window.
On SQLite its one write per batch waits for the engine's writes through `busy_timeout`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from newsletter.content.model import Issue
from newsletter.db import make_engine
from newsletter.delivery import ledger
from newsletter.delivery.compose import (
    IssueContext,
    Letter,
    RecipientData,
    personal_message,
    profile_message,
)
from newsletter.delivery.ledger import Claimed
from newsletter.errors import DeliveryError, NewsletterError
from newsletter.interests import sectors_of
from newsletter.mail.message import DkimKey
from newsletter.mail.settings import MailSettings
from newsletter.models import Campaign, CampaignState, Subscriber, SubscriberStatus
from newsletter.render.cache import BoundedCache, ProfileCache
from newsletter.render.environment import make_environment, templates_root
from newsletter.taxonomy import EmbassyDef, SectorDef

T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    """One claimed row and what to do with it."""

    row: Claimed
    letter: Letter | None  # None: skip (no longer active), or fail when `error` says why
    profile: str = ""
    message_id: str = ""
    error: str = ""  # this row alone cannot be composed (e.g. its address cannot be encoded)


class IssueRenderError(DeliveryError):
    """The issue itself cannot be rendered (not one recipient's data): its campaign pauses.

    `claim_and_compose` raises it once the batch's rows are released, so none stays leased.
    """

    def __init__(self, slug: str, reason: str) -> None:
        self.slug = slug
        self.reason = reason
        super().__init__(
            f"issue {slug} cannot be rendered: {reason}; correct the issue, then resume"
        )

    def __reduce__(self) -> tuple[type[IssueRenderError], tuple[str, str]]:
        # Rebuilt from its own arguments when it crosses from the helper process to the sender.
        return (type(self), (self.slug, self.reason))


def claim_and_compose(
    db: Engine,
    ctx: IssueContext,
    campaign_id: int,
    *,
    now: dt.datetime,
    limit: int,
    worker: str,
    lease: dt.timedelta,
    preview: bool,
) -> list[Job]:
    """Lease up to `limit` due rows of a sending campaign and compose their messages."""
    with Session(db, expire_on_commit=False) as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.state != CampaignState.SENDING:
            return []
        claimed = ledger.claim(
            session, campaign_id, now=now, limit=limit, worker=worker, lease=lease
        )
        session.commit()  # the leases stand (and the row locks go) before composing starts
        if not claimed:
            return []
        try:
            return _compose(session, ctx, campaign_id, claimed, preview=preview)
        except BaseException:
            # Nothing of this batch goes on the wire: give the rows back now rather than at the
            # end of their lease, so a resumed campaign (or another sender) finds them at once.
            _release_quietly(session, [row.delivery_id for row in claimed], now)
            raise


def _release_quietly(session: Session, ids: Sequence[int], now: dt.datetime) -> None:
    try:
        session.rollback()
        ledger.release(session, ids, now)
        session.commit()
    except Exception:
        pass  # the database is what failed: the leases end on their own, and the first error tells


# What one recipient's values can break while they are spliced in and encoded: an address with
# no wire form (AddressError is a ValueError), a value the encoder refuses (UnicodeError is one
# too), a header check (DeliveryError). Anything else is a fault of the program, not of the row.
_ROW_FAULTS = (ValueError, LookupError, NewsletterError)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _compose(
    session: Session,
    ctx: IssueContext,
    campaign_id: int,
    batch: Sequence[Claimed],
    *,
    preview: bool,
) -> list[Job]:
    ids = [row.subscriber_id for row in batch]
    # Plain rows, not ORM objects: a batch is hundreds of subscribers. Only active ones get mail.
    query = sa_select(
        col(Subscriber.id), col(Subscriber.email), col(Subscriber.name),
        col(Subscriber.language), col(Subscriber.embassy_code), col(Subscriber.token_key),
    ).where(col(Subscriber.id).in_(ids), col(Subscriber.status) == SubscriberStatus.ACTIVE)  # fmt: skip
    active = {row[0]: row for row in session.execute(query)}
    sectors = sectors_of(session, ids)
    jobs: list[Job] = []
    for row in batch:
        sub = active.get(row.subscriber_id)
        if sub is None:
            jobs.append(Job(row, None))
            continue
        _, email, name, language, embassy, token_key = sub
        recipient = RecipientData(
            subscriber_id=row.subscriber_id, email=email, name=name, language=language,
            embassy=embassy, sectors=sectors.get(row.subscriber_id, ()), token_key=token_key,
        )  # fmt: skip
        try:
            profile = profile_message(ctx, recipient)
        except Exception as exc:
            raise IssueRenderError(ctx.issue.slug, _one_line(exc)) from exc
        try:
            composed = personal_message(
                ctx, recipient, profile, campaign_id=campaign_id, preview=preview
            )
        except _ROW_FAULTS as exc:
            reason = f"cannot compose this message: {_one_line(exc)}"
            jobs.append(Job(row, None, profile.key, error=reason))
            continue
        jobs.append(Job(row, composed.letter, composed.profile, composed.message_id))
    return jobs


class Composer(Protocol):
    """Where the engine gets its batches; `renders` counts the profiles rendered for it."""

    @property
    def renders(self) -> int: ...

    async def claim(
        self,
        campaign_id: int,
        *,
        now: dt.datetime,
        limit: int,
        worker: str,
        lease: dt.timedelta,
        preview: bool,
    ) -> list[Job]: ...

    async def close(self) -> None: ...


class LocalComposer:
    """Claims and composes on one thread of the sender's process: no start-up cost (small sends)."""

    def __init__(self, db: Engine, ctx: IssueContext) -> None:
        self.db = db
        self.ctx = ctx
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._renders_before = ctx.cache.renders

    @property
    def renders(self) -> int:
        return self.ctx.cache.renders - self._renders_before

    async def claim(
        self,
        campaign_id: int,
        *,
        now: dt.datetime,
        limit: int,
        worker: str,
        lease: dt.timedelta,
        preview: bool,
    ) -> list[Job]:
        work = functools.partial(
            claim_and_compose, self.db, self.ctx, campaign_id, now=now, limit=limit,
            worker=worker, lease=lease, preview=preview,
        )  # fmt: skip
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def close(self) -> None:
        self._thread.shutdown(wait=True)


# --- The helper process -------------------------------------------------------------------------


@dataclass(frozen=True)
class HelperSetup:
    """What the helper needs to build its own database engine and issue context; all picklable.

    Pickled to the helper process: `mail` carries no SMTP credentials (the helper never sends).
    """

    database_url: str
    mail: MailSettings
    issue: Issue
    sectors: dict[str, SectorDef]
    embassies: dict[str, EmbassyDef]
    templates: Path
    dkim: DkimKey | None
    cache_size: int | None

    @classmethod
    def of(cls, db: Engine, ctx: IssueContext) -> HelperSetup | None:
        """None when a helper could not reach the same database or templates (in-memory SQLite)."""
        templates = templates_root(ctx.env)
        name = db.url.database
        if templates is None or db.dialect.name not in ("sqlite", "postgresql"):
            return None
        if db.dialect.name == "sqlite" and (
            not name or name == ":memory:" or "mode=memory" in name
        ):
            return None
        return cls(
            database_url=db.url.render_as_string(hide_password=False), mail=ctx.mail,
            issue=ctx.issue, sectors=ctx.sectors, embassies=ctx.embassies, templates=templates,
            dkim=ctx.dkim, cache_size=ctx.cache.maxsize,
        )  # fmt: skip


@dataclass(frozen=True)
class Batch:
    jobs: list[Job]
    renders: int  # profiles the helper has rendered so far


# The helper's own state: set by `_initialise`, built by the first call, dropped by `dispose`.
_setup: HelperSetup | None = None
_state: tuple[Engine, IssueContext] | None = None


def _initialise(setup: HelperSetup) -> None:
    global _setup
    # Ctrl-C and a service manager's SIGTERM reach the whole process group: the sender alone
    # decides when to stop, then shuts the helper down. (They are blocked from birth as well.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with, args=(parent.sentinel,), name="sender-watch", daemon=True
        ).start()
    _setup = setup


def _exit_with(sender: int) -> None:
    """A sender killed outright cannot shut its helper down: the helper then ends at once.

    (The pool's worker would wait for work forever: it holds its queue's writing end too.)
    """
    multiprocessing.connection.wait([sender])
    os._exit(1)


def _helper_state() -> tuple[Engine, IssueContext]:
    global _state
    if _state is None:
        assert _setup is not None, "the helper process was not initialised"
        s = _setup
        ctx = IssueContext(
            issue=s.issue, sectors=s.sectors, embassies=s.embassies, mail=s.mail,
            env=make_environment(s.templates), dkim=s.dkim,
            cache=ProfileCache(s.cache_size), prepared=BoundedCache(s.cache_size),
        )  # fmt: skip
        _state = (make_engine(s.database_url), ctx)
    return _state


def warm_up() -> None:
    """Build the helper's context (modules, templates) while the sender prepares the campaign."""
    _helper_state()


def claim_and_prepare(
    campaign_id: int, now: dt.datetime, limit: int, worker: str, lease_seconds: float, preview: bool
) -> Batch:
    """In the helper: `claim_and_compose` on the helper's own engine and context."""
    db, ctx = _helper_state()
    try:
        jobs = claim_and_compose(
            db, ctx, campaign_id, now=now, limit=limit, worker=worker,
            lease=dt.timedelta(seconds=lease_seconds), preview=preview,
        )  # fmt: skip
    except Exception as exc:
        carried = portable(exc)
        if carried is exc:
            raise
        raise carried from exc
    return Batch(jobs, ctx.cache.renders)


def dispose() -> None:
    """In the helper: close its database connections."""
    global _state
    state, _state = _state, None
    if state is not None:
        state[0].dispose()


def _rebuild(
    kind: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
) -> BaseException:
    error = kind.__new__(kind, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class _Carried(Exception):
    """Unpickles as the error it carries, rebuilt without calling that error's constructor."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error

    def __reduce__(self) -> tuple[Callable[..., BaseException], tuple[Any, ...]]:
        error = self.error
        return _rebuild, (type(error), error.args, dict(vars(error)))


def portable(error: Exception) -> Exception:
    """`error`, or a stand-in that reaches the sender as the same type with the same message.

    Errors whose constructor takes other arguments than their message (a template error names
    its file) do not survive pickling as they are; the sender would only hear "the pool broke".
    """
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        pass
    try:
        pickle.loads(pickle.dumps(_Carried(error)))
        return _Carried(error)
    except Exception:
        return DeliveryError(f"{type(error).__name__}: {error}")


@contextmanager
def _signals_blocked() -> Iterator[None]:
    """A process started in here begins life with SIGINT and SIGTERM blocked (the mask is inherited)."""
    shielded = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, shielded)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class HelperDiedError(DeliveryError):
    def __init__(self) -> None:
        super().__init__(
            "the helper process composing messages ended unexpectedly (killed, or out of "
            "memory?); the rows it had claimed go back to the queue when their lease ends"
        )


class ProcessComposer:
    """Claims and composes in one helper process.

    Spawned, never forked (the sender has threads by then). Spawning imports the program's main
    module again in the helper, so a program that embeds the engine keeps its work under
    `if __name__ == "__main__":`, as the `newsletter` command does, or passes `helper=False`.
    """

    def __init__(self, setup: HelperSetup) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"),
            initializer=_initialise, initargs=(setup,),
        )  # fmt: skip
        self._renders = 0
        try:
            # The first call starts the helper; it warms up while the sender prepares the campaign.
            with _signals_blocked():
                self._pool.submit(warm_up)
        except BaseException:
            self._pool.shutdown(wait=True, cancel_futures=True)
            raise

    @property
    def renders(self) -> int:
        return self._renders

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)
        except BrokenProcessPool as exc:
            raise HelperDiedError() from exc

    async def claim(
        self,
        campaign_id: int,
        *,
        now: dt.datetime,
        limit: int,
        worker: str,
        lease: dt.timedelta,
        preview: bool,
    ) -> list[Job]:
        batch = await self._call(
            claim_and_prepare, campaign_id, now, limit, worker, lease.total_seconds(), preview
        )
        self._renders = batch.renders
        return batch.jobs

    async def close(self) -> None:
        """Dispose of the helper's engine, then let it exit; in every case the process is gone."""
        await asyncio.get_running_loop().run_in_executor(None, self._shut_down)

    def _shut_down(self) -> None:
        try:
            self._pool.submit(dispose).result()
        except Exception:
            pass  # the helper is gone already, or exits next and its connections with it
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
