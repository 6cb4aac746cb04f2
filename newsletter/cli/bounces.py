"""`bounces ingest`: delivery status notifications in, bounced subscribers out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    err,
    group,
    open_session,
    print_json,
    settings_for,
)
from newsletter.delivery.bounces import Bounce, parse_bounces, read_messages
from newsletter.models import utcnow
from newsletter.subscriptions.bounce_policy import (
    DEFAULT_SOFT_THRESHOLD,
    DEFAULT_SOFT_WINDOW,
    Applied,
    apply_bounces,
    tally,
)

bounces_app = group("bounces", "Read bounce reports (delivery status notifications).")

NOT_A_DSN = "not a delivery status notification"
NO_FAILURE = "reports no failed or delayed recipient"


@bounces_app.command("ingest")
def bounces_ingest(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(help="Messages (.eml), folders of .eml, mbox files or maildirs."),
    ],
    soft_threshold: Annotated[
        int,
        typer.Option(
            "--soft-threshold", min=1, help="Soft bounces within the window that disable."
        ),
    ] = DEFAULT_SOFT_THRESHOLD,
    soft_window_days: Annotated[
        int, typer.Option("--soft-window-days", min=1, help="The window for --soft-threshold.")
    ] = DEFAULT_SOFT_WINDOW.days,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Hard bounces mark the subscriber bounced; soft ones count, and too many disable.

    Other mail (auto-replies, spam) is skipped; reading the same reports again changes nothing.
    """
    settings = settings_for(ctx, config)
    bounces: list[tuple[str, Bounce]] = []
    skipped: list[tuple[str, str]] = []
    messages = 0
    for source, data in read_messages(paths):
        messages += 1
        found = parse_bounces(data, domain=settings.domain)
        if not found:
            skipped.append((source, NOT_A_DSN if found is None else NO_FAILURE))
        bounces.extend((source, b) for b in found or ())
    with open_session(settings) as session:
        applied = apply_bounces(
            session, [b for _, b in bounces], now=utcnow(), soft_threshold=soft_threshold,
            soft_window=dt.timedelta(days=soft_window_days),
        )  # fmt: skip
    summary = {"messages": messages, **tally(applied), "skipped": len(skipped)}
    rows = [_row(source, a) for (source, _), a in zip(bounces, applied, strict=True)]
    if json_:
        print_json({
            **summary, "bounces": rows,
            "skipped_messages": [{"source": s, "reason": r} for s, r in skipped],
        })  # fmt: skip
        return
    for row in rows:
        campaign = f" campaign {row['campaign_id']}" if row["campaign_id"] is not None else ""
        _say(
            f"{row['outcome']:>15} {row['email'] or row['recipient']} {row['kind']} "
            f"{row['status']}{campaign}: {row['diagnostic']}"
        )
    for source, reason in skipped:
        _say(f"{'skipped':>15} {source}: {reason}")
    _say(", ".join(f"{value} {key}" for key, value in summary.items()))


def _say(line: str) -> None:
    # One line per bounce whatever the terminal width, and the remote text shown as written.
    err.print(line, markup=False, highlight=False, soft_wrap=True)


def _row(source: str, applied: Applied) -> dict[str, object]:
    b = applied.bounce
    return {
        "source": source, "recipient": b.recipient, "email": applied.email or None,
        "kind": str(b.kind), "status": b.status, "diagnostic": b.diagnostic,
        "campaign_id": b.campaign_id, "outcome": str(applied.outcome),
    }  # fmt: skip
