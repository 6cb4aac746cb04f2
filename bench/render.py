"""Tailored digests per second for the sample issue: our profile cache + splicing vs the naive way.

Naive: for every recipient, Jinja2 + MJML render, then personalise, then an `EmailMessage` built
and serialised. Ours: `compose` (tailor, render once per profile, splice per recipient). Both produce
the bytes that go on the wire. Run: `.venv/bin/python bench/render.py [--subscribers N]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import context, machine, median_rate, naive_message, recipients

from newsletter.delivery.compose import compose, profile_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--naive", type=int, default=300, help="recipients for the naive way")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    people = recipients(context(), args.subscribers)
    # In profile order, as the engine claims rows (ledger.claim): the bounded render cache then
    # renders each profile once. Tailoring to find the order is not timed here; the engine does it
    # once per campaign (ledger.plan_profiles) and `ours` below tailors every recipient again.
    planning = context()
    people.sort(key=lambda r: profile_for(planning, r))

    def ours() -> int:
        ctx = context()  # a cold cache each run: every profile rendered once, inside the timing
        size = 0
        for r in people:
            size += len(compose(ctx, r, campaign_id=1, preview=False).outgoing.data)
        ours.profiles, ours.bytes = ctx.cache.renders, size / len(people)  # type: ignore[attr-defined]
        return len(people)

    def naive() -> int:
        ctx = context()
        for r in people[: args.naive]:
            naive_message(ctx, r)
        return int(args.naive)

    ours_rate, ours_runs = median_rate(ours, args.repeats)
    naive_rate, naive_runs = median_rate(naive, args.repeats)
    ctx = context()
    profiles = len({profile_for(ctx, r) for r in people})
    print(f"machine: {machine()}")
    print(f"sample issue 2020-01, {len(people):,} generated subscribers, {profiles:,} profiles")
    runs = ", ".join(f"{x:,.0f}" for x in ours_runs)
    print(f"ours : {ours_rate:9,.0f} digests/s (median of {args.repeats}; runs {runs})")
    print(
        f"naive: {naive_rate:9,.0f} digests/s (median of {args.repeats}, {args.naive} recipients each)"
    )
    print(f"ratio: {ours_rate / naive_rate:,.1f}x faster; mean message {ours.bytes:,.0f} bytes")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
