"""`bounces ingest`: delivery status notifications in, bounced subscribers out; `bounces undo`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from newsletter.actors import Actor
from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    err,
    group,
    print_json,
    settings_for,
)
from newsletter.scheduling.rules import parse_instant
from newsletter.services import bounces as service
from newsletter.subscriptions.bounce_policy import (
    DEFAULT_SOFT_THRESHOLD,
    DEFAULT_SOFT_WINDOW,
    Applied,
)
from newsletter.subscriptions.lifecycle import unbounce_reason

bounces_app = group("bounces", "Read bounce reports (delivery status notifications).")


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
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what the reports would change; change nothing.")
    ] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Hard bounces mark the subscriber bounced; soft ones count, and too many disable.

    Only reports returning a message we sent to the address they name act ("not-ours": forged
    or someone else's, changes nobody). Other mail (auto-replies, spam) is skipped; a message
    that cannot be read is reported as unreadable and the rest still apply (exit status 0);
    reading the same reports again changes nothing.
    """
    read = service.ingest_bounces(
        settings_for(ctx, config), paths, actor=Actor.cli(), soft_threshold=soft_threshold,
        soft_window=dt.timedelta(days=soft_window_days), dry_run=dry_run,
    )  # fmt: skip
    summary: dict[str, object] = {**read.summary, "rows_bounced": read.rows_bounced}
    if dry_run:
        summary["dry_run"] = True
    rows = [_row(source, a) for source, a in read.bounces]
    if json_:
        print_json({
            **summary, "bounces": rows,
            "skipped_messages": [{"source": p.source, "reason": p.reason} for p in read.skipped],
            "unreadable_messages": [
                {"source": p.source, "reason": p.reason} for p in read.unreadable
            ],
        })  # fmt: skip
        return
    for row in rows:
        campaign = f" campaign {row['campaign_id']}" if row["campaign_id"] is not None else ""
        said = f"{row['reason']} ({row['diagnostic']})" if row["reason"] else row["diagnostic"]
        _say(
            f"{row['outcome']:>15} {row['email'] or row['recipient']} {row['kind']} "
            f"{row['status']}{campaign}: {said}"
        )
    for passed in read.skipped:
        _say(f"{'skipped':>15} {passed.source}: {passed.reason}")
    for passed in read.unreadable:
        _say(f"{'unreadable':>15} {passed.source}: {passed.reason}")
    if read.rows_bounced:
        _say(f"{read.rows_bounced} ledger rows now say their message bounced (campaign report)")
    counts = ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in read.summary.items())
    _say(counts + (" (dry run)" if dry_run else ""))


def _say(line: str) -> None:
    # One line per bounce whatever the terminal width, and the remote text shown as written.
    err.print(line, markup=False, highlight=False, soft_wrap=True)


def _row(source: str, applied: Applied) -> dict[str, object]:
    b = applied.bounce
    return {
        "source": source, "recipient": b.recipient, "email": applied.email or None,
        "kind": str(b.kind), "status": b.status, "diagnostic": b.diagnostic,
        "campaign_id": b.campaign_id, "message_id": b.message_id or None,
        "outcome": str(applied.outcome), "reason": applied.reason,
    }  # fmt: skip


@bounces_app.command("undo")
def bounces_undo(
    ctx: typer.Context,
    emails: Annotated[
        list[str] | None, typer.Argument(help="Addresses of bounced subscribers.")
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why the bounce was wrong; kept in the audit log.")
    ] = "",
    all_since: Annotated[
        str | None,
        typer.Option(
            "--all-since",
            help="Also everyone bounced at or after this ISO 8601 time with offset, "
            "such as 2026-05-04T09:00+08:00.",
        ),
    ] = None,
    matching: Annotated[
        str,
        typer.Option(
            "--matching",
            help="With --all-since: only bounces whose reason contains this text, such as "
            '"local recipient table".',
        ),
    ] = "",
    by: Annotated[
        str, typer.Option("--by", help="Who undoes it, for the audit log (default: login name).")
    ] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say who would be un-bounced; change nothing.")
    ] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Undo wrong bounces (a relay that refused everyone): back to active, audited.

    Only bounced subscribers can be un-bounced; someone who never confirmed returns to pending.
    Erased or suppressed addresses stay so. Exit status 1 when a named address was refused.
    """
    if not emails and all_since is None:
        raise typer.BadParameter("name addresses or give --all-since", param_hint="EMAILS")
    if matching and all_since is None:
        raise typer.BadParameter("--matching selects among --all-since", param_hint="--matching")
    unbounce_reason(reason)  # no reason, no work: fail before opening anything
    since = parse_instant(all_since, "--all-since") if all_since is not None else None
    done = service.undo_bounces(
        settings_for(ctx, config), emails=emails or (), since=since, matching=matching,
        reason=reason, actor=Actor.cli(), by=by, dry_run=dry_run,
    )  # fmt: skip
    undone = [d for d in done if d.status]
    refused = [d for d in done if d.refused]
    if json_:
        print_json({
            "dry_run": dry_run, "unbounced": len(undone), "refused": len(refused),
            "subscribers": [{"email": d.email, "status": d.status or None,
                             "refused": d.refused or None} for d in done],
        })  # fmt: skip
    else:
        verb = "would return" if dry_run else "returned"
        for d in undone:
            _say(f"{'un-bounced':>15} {d.email}: {verb} to {d.status}")
        for d in refused:
            _say(f"{'refused':>15} {d.email}: {d.refused}")
        _say(
            f"{len(undone)} un-bounced, {len(refused)} refused" + (" (dry run)" if dry_run else "")
        )
    if refused:
        raise typer.Exit(1)
