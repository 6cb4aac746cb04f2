"""Per-row costs of the ledger's queries as a list grows: 1,000, 100,000 and 1,000,000 rows.

For each size: a fresh SQLite instance at the latest schema with that many active subscribers and
one campaign queued for all of them; then, with 0 %, 50 % and 95 % of the rows sent (the first in
claim order, as a campaign goes out), the median time of

- a claim of 200 rows (`ledger.claim`, rolled back so every repeat sees the same ledger), and the
  baseline beside it: the claim as it was before migration 0009 (one query over both waiting
  states, ordered by the old `(campaign, profile, id)` index), on a copy of the same database with
  the old indexes;
- the per-state counts `campaign status` shows (`campaigns.counts`);

and, once per size, planning every row's profile before the first message leaves
(`ledger.plan_profiles` over the whole campaign, as `send` does), in microseconds per row, with
the profile keys from `tailor.ProfileKeys` and, beside them, the baseline: a selection per
reader (`select_items` + `profile_key`) behind the 16,384-entry LRU the engine used before.

A flat column is the goal: the same cost at 1k and at 1M, and at 0 % and at 95 % sent.

    .venv/bin/python bench/scale.py [--sizes 1000,100000,1000000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import insert, update
from sqlmodel import Session, col, select

sys.path.insert(0, str(Path(__file__).parent))

from common import machine
from send import build_database

from newsletter import runtime
from newsletter.config import load_settings
from newsletter.db import make_engine
from newsletter.delivery import campaigns, ledger
from newsletter.delivery.compose import RecipientData, audience_for, profile_for
from newsletter.issues import get_issue
from newsletter.models import Delivery, DeliveryState, Subscriber
from newsletter.render.cache import BoundedCache
from newsletter.states import WAITING
from newsletter.tailor import profile_key, select_items

CLAIM = 200
NOW = dt.datetime(2026, 12, 2, 8, 0, tzinfo=dt.UTC)


def build(folder: Path, n: int) -> tuple[Path, int]:
    """An instance with n subscribers and one campaign that queues a row for each."""
    config = build_database(folder, n)
    engine = make_engine(load_settings(config).resolved_database_url)
    with Session(engine) as session:
        campaign, _ = campaigns.open_campaign(session, get_issue(session, "2020-01").record)
        cid = int(campaign.id or 0)
        ids = session.exec(select(Subscriber.id).order_by(col(Subscriber.id))).all()
        # Profiles as the sample lists give them: a few thousand distinct ones, interleaved.
        rows = [
            {"campaign_id": cid, "subscriber_id": sid, "state": DeliveryState.QUEUED,
             "profile": f"p{(sid or 0) * 7919 % 2500:04d}"}
            for sid in ids
        ]  # fmt: skip
        for start in range(0, len(rows), 50_000):
            session.execute(insert(Delivery), rows[start : start + 50_000])
        session.commit()
    engine.dispose()
    return config, cid


def mark_sent(database: Path, fraction: float, n: int) -> None:
    """The first `fraction` of rows in claim order sent, as a campaign leaves them behind."""
    with sqlite3.connect(database) as db:
        db.execute("UPDATE delivery SET state = 'queued'")
        db.execute(
            "UPDATE delivery SET state = 'sent' WHERE id IN "
            "(SELECT id FROM delivery ORDER BY profile, id LIMIT ?)",
            (int(n * fraction),),
        )


def old_indexes(database: Path) -> None:
    with sqlite3.connect(database) as db:
        db.execute("DROP INDEX ix_delivery_claim")
        db.execute("CREATE INDEX ix_delivery_campaign_state ON delivery (campaign_id, state)")
        db.execute("CREATE INDEX ix_delivery_claim_order ON delivery (campaign_id, profile, id)")
        db.execute("ANALYZE")


def old_claim(session: Session, cid: int) -> int:
    """The claim before 0009: both waiting states in one query, in profile order, then the lease."""
    waiting = col(Delivery.state).in_(WAITING) & (
        col(Delivery.next_attempt_at).is_(None) | (col(Delivery.next_attempt_at) <= NOW)
    )
    free = col(Delivery.lease_until).is_(None) | (col(Delivery.lease_until) < NOW)
    window = (col(Delivery.not_before).is_(None) | (col(Delivery.not_before) <= NOW)) & (
        col(Delivery.not_after).is_(None) | (col(Delivery.not_after) > NOW)
    )
    rows = session.exec(
        select(Delivery.id, Delivery.subscriber_id, Delivery.attempts, Delivery.first_attempt_at)
        .where(col(Delivery.campaign_id) == cid, waiting, window, free)
        .order_by(col(Delivery.profile), col(Delivery.id))
        .limit(CLAIM)
    ).all()
    session.execute(
        update(Delivery)
        .where(col(Delivery.id).in_([r[0] for r in rows]))
        .values(lease_until=NOW + dt.timedelta(minutes=5), worker="bench", updated_at=NOW)
    )
    return len(rows)


def new_claim(session: Session, cid: int) -> int:
    lease = dt.timedelta(minutes=5)
    return len(ledger.claim(session, cid, now=NOW, limit=CLAIM, worker="bench", lease=lease))


def status(session: Session, cid: int) -> int:
    return sum(campaigns.counts(session, cid).values())


def plan_us_per_row(config: Path, cid: int, n: int, *, fast: bool) -> float:
    """Plan every row's profile (rolled back afterwards); microseconds per row."""
    settings = load_settings(config)
    engine = make_engine(settings.resolved_database_url)
    try:
        with Session(engine) as session:
            session.execute(update(Delivery).values(profile=""))
            ctx = runtime.issue_context(session, settings, "2020-01")
            by_reader: BoundedCache[str] = BoundedCache(maxsize=16384)  # the engine's before

            def by_selection(
                sid: int, language: str, embassy: str, sectors: tuple[str, ...]
            ) -> str:
                r = RecipientData(sid, "", "", language, embassy, sectors, "")
                return by_reader.get_or_render(
                    repr((language, embassy, sectors)),
                    lambda: profile_key(
                        select_items(ctx.issue, audience_for(r, ctx.embassies)), language
                    ),
                )

            def by_keys(sid: int, language: str, embassy: str, sectors: tuple[str, ...]) -> str:
                return profile_for(ctx, RecipientData(sid, "", "", language, embassy, sectors, ""))

            started = time.perf_counter()
            after = 0
            while after := ledger.plan_profiles(
                session, cid, by_keys if fast else by_selection, after=after
            ):
                pass
            took = time.perf_counter() - started
            session.rollback()
    finally:
        engine.dispose()
    return took / n * 1e6


def median_ms(url: str, work: Callable[[Session, int], int], cid: int, repeats: int) -> float:
    engine = make_engine(url)
    times = []
    try:
        for _ in range(repeats):
            with Session(engine) as session:
                started = time.perf_counter()
                work(session, cid)
                times.append((time.perf_counter() - started) * 1000)
                session.rollback()
    finally:
        engine.dispose()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"claim of {CLAIM} rows and campaign counts, median of {args.repeats}, milliseconds")
    print(f"{'rows':>9} {'sent':>5} {'claim':>8} {'before':>8} {'ratio':>7} {'counts':>8}")
    for n in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            started = time.perf_counter()
            config, cid = build(folder, n)
            built = time.perf_counter() - started
            database = folder / "newsletter.db"
            baseline = folder / "before.db"
            for fraction in (0.0, 0.5, 0.95):
                mark_sent(database, fraction, n)
                with sqlite3.connect(database) as db:
                    db.execute("ANALYZE")
                shutil.copyfile(database, baseline)
                old_indexes(baseline)
                new = median_ms(f"sqlite:///{database}", new_claim, cid, args.repeats)
                old = median_ms(f"sqlite:///{baseline}", old_claim, cid, args.repeats)
                counts = median_ms(f"sqlite:///{database}", status, cid, args.repeats)
                print(
                    f"{n:>9,} {fraction:>5.0%} {new:>8.2f} {old:>8.2f} {old / new:>6.1f}x"
                    f" {counts:>8.2f}",
                    flush=True,
                )
            mark_sent(database, 0.0, n)
            fast = plan_us_per_row(config, cid, n, fast=True)
            slow = plan_us_per_row(config, cid, n, fast=False)
            print(
                f"          planning profiles: {fast:.1f} us/row ({fast * n / 1e6:.1f} s), "
                f"by selection {slow:.1f} us/row ({slow * n / 1e6:.1f} s): {slow / fast:.1f}x",
                flush=True,
            )
            print(f"          (built {n:,} rows in {built:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
