"""Bounces: read delivery status notifications into the lists, and undo wrong bounces.

Both take the `Actor` who asked; an undo writes it into each subscriber's audit trail (the
bounces themselves are recorded as the reports' doing, actor "dsn"). Each runs in one
transaction; a dry run reports what would change and rolls it all back.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.actors import Actor
from newsletter.config import Settings
from newsletter.db import Engine, Session
from newsletter.delivery.bounces import (
    Bounce,
    BounceKind,
    UnreadableReport,
    parse_bounces,
    read_messages,
)
from newsletter.delivery.verp import VerpKey
from newsletter.models import utcnow
from newsletter.services.units import unit_of_work
from newsletter.subscriptions import bounce_policy, returned_mail
from newsletter.subscriptions.bounce_policy import (
    DEFAULT_SOFT_THRESHOLD,
    DEFAULT_SOFT_WINDOW,
    Applied,
    Outcome,
    Undone,
)
from newsletter.subscriptions.lifecycle import unbounce_reason

log = logging.getLogger(__name__)
NOT_A_DSN = "not a delivery status notification"
NO_FAILURE = "reports no failed or delayed recipient"


@dataclass(frozen=True)
class Passed:
    """A message that changed nobody, and why (not a report, no failure in it, unreadable)."""

    source: str
    reason: str


@dataclass
class Ingested:
    """What reading the reports did (in a dry run: would do), one outcome per bounce."""

    messages: int = 0
    bounces: list[tuple[str, Applied]] = field(default_factory=list)  # (source, outcome)
    skipped: list[Passed] = field(default_factory=list)
    unreadable: list[Passed] = field(default_factory=list)
    dry_run: bool = False
    rows_bounced: int = 0  # ledger rows now saying their message bounced

    @property
    def summary(self) -> dict[str, int]:
        return {
            "messages": self.messages, **bounce_policy.tally([a for _, a in self.bounces]),
            "skipped": len(self.skipped), "unreadable": len(self.unreadable),
        }  # fmt: skip


def _why(exc: Exception) -> str:
    if isinstance(exc, UnreadableReport):
        return str(exc)
    first = (str(exc).splitlines() or [""])[0][:200]
    return f"cannot be parsed ({type(exc).__name__}{': ' + first if first else ''})"


def verp_key(settings: Settings) -> VerpKey | None:
    """What reads the digests' return paths, when they carry one ([inbox] bounce_domain)."""
    domain = settings.inbox.bounce_domain
    return VerpKey(settings.secret, domain) if domain else None


def apply_bounces(
    session: Session,
    bounces: Sequence[Bounce],
    *,
    now: dt.datetime,
    soft_threshold: int = DEFAULT_SOFT_THRESHOLD,
    soft_window: dt.timedelta = DEFAULT_SOFT_WINDOW,
) -> tuple[list[Applied], int]:
    """The bounce policy, then the ledger: each hard bounce of our message marks its row.
    (outcomes, rows marked bounced)."""
    applied = bounce_policy.apply_reports(
        session, bounces, now=now, soft_threshold=soft_threshold, soft_window=soft_window
    )
    marked = sum(
        returned_mail.mark_bounced(session, a.bounce, now=now)
        for a in applied
        if a.bounce.kind is BounceKind.HARD and a.outcome is not Outcome.NOT_OURS
    )
    return applied, marked


def _read(
    paths: Sequence[Path], domain: str, verp: VerpKey | None
) -> tuple[Ingested, list[tuple[str, Bounce]]]:
    read = Ingested()
    bounces: list[tuple[str, Bounce]] = []
    for source, data in read_messages(paths):
        read.messages += 1
        try:
            found = parse_bounces(data, domain=domain, verp=verp)
        except Exception as exc:  # one crafted or broken message never stops the others
            read.unreadable.append(Passed(source, _why(exc)))
            continue
        if not found:
            read.skipped.append(Passed(source, NOT_A_DSN if found is None else NO_FAILURE))
        bounces.extend((source, b) for b in found or ())
    return read, bounces


def ingest_bounces(
    settings: Settings,
    paths: Sequence[Path],
    *,
    actor: Actor,
    soft_threshold: int = DEFAULT_SOFT_THRESHOLD,
    soft_window: dt.timedelta = DEFAULT_SOFT_WINDOW,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    db: Engine | None = None,
) -> Ingested:
    """Hard bounces mark the subscriber bounced; soft ones count, and too many disable.

    Only reports returning a message we sent to the address they name act; other mail is
    skipped, and a message that cannot be read is reported and the rest still apply. Reading
    the same reports again changes nothing.
    """
    read, bounces = _read(paths, settings.domain, verp_key(settings))
    with unit_of_work(settings, db, commit=not dry_run) as session:
        applied, read.rows_bounced = apply_bounces(
            session, [b for _, b in bounces], now=now or utcnow(),
            soft_threshold=soft_threshold, soft_window=soft_window,
        )  # fmt: skip
    read.bounces = [(source, a) for (source, _), a in zip(bounces, applied, strict=True)]
    read.dry_run = dry_run
    log.info(
        "%s (via %s) read %d messages of bounces%s",
        actor.label, actor.via, read.messages, " (dry run)" if dry_run else "",
    )  # fmt: skip
    return read


def undo_bounces(
    settings: Settings,
    *,
    emails: Sequence[str] = (),
    since: dt.datetime | None = None,
    matching: str = "",
    reason: str,
    actor: Actor,
    by: str = "",
    dry_run: bool = False,
    db: Engine | None = None,
) -> list[Undone]:
    """Return wrongly bounced subscribers to active (or pending, if never confirmed), audited.

    The named `emails`, then everyone bounced at or after `since` whose bounce's reason
    contains `matching`. Each refusal (not bounced, unknown, erased) is a result with its
    reason. `by` names the person in the audit detail (default: the actor's name).
    """
    unbounce_reason(reason)  # no reason, no work: fail before opening anything
    with unit_of_work(settings, db, commit=not dry_run) as session:
        done = bounce_policy.undo_bounces(
            session, settings.secret, emails=emails, since=since, matching=matching,
            reason=reason, actor=actor, by=by.strip() or actor.name,
        )  # fmt: skip
    log.info(
        "%s (via %s) un-bounced %d subscribers%s",
        actor.label, actor.via, sum(1 for d in done if d.status), " (dry run)" if dry_run else "",
    )  # fmt: skip
    return done
