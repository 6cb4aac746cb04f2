"""`campaign list|status|report|pause|resume|cancel|requeue-failed|resend-unknown`, `worker`."""

from __future__ import annotations

import asyncio
import csv
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from newsletter import runtime
from newsletter.actors import Actor, Scope
from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    app,
    err,
    group,
    out,
    print_json,
    run_until_signal,
    settings_for,
)
from newsletter.delivery.campaigns import LedgerRow
from newsletter.delivery.engine import SendReport
from newsletter.services import campaigns as service
from newsletter.services.worker import Worker, one_line_database_faults
from newsletter.subscriptions.lists import unformula

campaign_app = group("campaign", "Follow and control campaigns.")
_COLUMNS = ("id", "issue", "state", "total", "sent", "failed", "retry", "unknown", "skipped")


@campaign_app.command("list")
def campaign_list(
    ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False
) -> None:
    """Campaigns with their ledger counts."""
    rows = [s.as_dict() for s in service.list_campaigns(settings_for(ctx, config))]
    if json_:
        print_json(rows)
        return
    table = Table(*_COLUMNS)
    for r in rows:
        table.add_row(*(str(r[k]) for k in _COLUMNS))
    out.print(table)


@campaign_app.command("status")
def campaign_status(
    ctx: typer.Context, campaign_id: int, config: ConfigOption = None, json_: JsonOption = False
) -> None:
    """One campaign's state and ledger counts."""
    summary = service.campaign_status(settings_for(ctx, config), campaign_id).as_dict()
    if json_:
        print_json(summary)
        return
    for key, value in summary.items():
        out.print(f"{key:>10}: {value}", markup=False)


CampaignId = Annotated[int, typer.Argument(help="Campaign id (see `newsletter campaign list`).")]


@campaign_app.command("pause")
def campaign_pause(
    ctx: typer.Context, campaign_id: CampaignId, config: ConfigOption = None
) -> None:
    """Stop sending after the messages in flight; `resume` continues."""
    service.pause_campaign(settings_for(ctx, config), campaign_id, actor=Actor.cli())
    err.print(f"campaign {campaign_id} paused")


@campaign_app.command("resume")
def campaign_resume(
    ctx: typer.Context, campaign_id: CampaignId, config: ConfigOption = None
) -> None:
    """Let a paused campaign send again (a running `worker`, or `newsletter send`, picks it up)."""
    service.resume_campaign(settings_for(ctx, config), campaign_id, actor=Actor.cli())
    err.print(f"campaign {campaign_id} resumed")


@campaign_app.command("cancel")
def campaign_cancel(
    ctx: typer.Context, campaign_id: CampaignId, config: ConfigOption = None
) -> None:
    """Stop for good: rows not yet sent are skipped, and its planned sends are cancelled."""
    cancelled = service.cancel_campaign(settings_for(ctx, config), campaign_id, actor=Actor.cli())
    flight = (
        f"; {cancelled.in_flight} messages were already on the wire and are recorded as the "
        f"server answers (`newsletter campaign status {campaign_id}`)"
        if cancelled.in_flight
        else ""
    )
    err.print(
        f"campaign {campaign_id} cancelled; {cancelled.skipped} unsent rows skipped, "
        f"{len(cancelled.plans)} plans cancelled{flight}"
    )


@campaign_app.command("requeue-failed")
def campaign_requeue_failed(
    ctx: typer.Context, campaign_id: CampaignId, config: ConfigOption = None
) -> None:
    """Failed rows of still-active subscribers wait again (after fixing what made them fail)."""
    requeued = service.requeue_failed(settings_for(ctx, config), campaign_id, actor=Actor.cli())
    err.print(
        f"campaign {campaign_id}: {requeued} failed rows queued again; "
        "`newsletter send` or a running `worker` sends them"
    )


@campaign_app.command("resend-unknown")
def campaign_resend_unknown(
    ctx: typer.Context, campaign_id: CampaignId, config: ConfigOption = None
) -> None:
    """Rows in flight when a sender died wait again: these recipients may get the issue twice."""
    requeued = service.resend_unknown(settings_for(ctx, config), campaign_id, actor=Actor.cli())
    err.print(
        f"campaign {campaign_id}: {requeued} rows of unknown fate queued again (each may "
        "already have arrived: they may get it twice); `newsletter send` or a running `worker` "
        "sends them"
    )


_STATES = ("sent", "failed", "retry", "queued", "sending", "unknown", "skipped")


def _write_csv(csv_file: Path, rows: Sequence[LedgerRow]) -> None:
    with csv_file.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "embassy", "state", "attempts", "reply", "sent_at", "message_id"])
        for r in rows:
            sent = r.sent_at.isoformat() if r.sent_at else ""
            cells = [r.email, r.embassy, r.state, str(r.attempts), r.reply, sent, r.message_id]
            writer.writerow([unformula(c) for c in cells])


@campaign_app.command("report")
def campaign_report(
    ctx: typer.Context,
    campaign_id: CampaignId,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Write every recipient to FILE.")
    ] = None,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Every recipient's state with the SMTP reply, and counts per embassy and state."""
    report = service.campaign_report(settings_for(ctx, config), campaign_id, scope=Scope.all())
    rows, per_embassy = report.recipients, report.by_embassy
    if csv_file:
        _write_csv(csv_file, rows)
        err.print(f"wrote {csv_file}: {len(rows)} recipients")
    if json_:
        summary = report.summary.as_dict()
        print_json({**summary, "by_embassy": per_embassy, "recipients": [asdict(r) for r in rows]})
        return
    table = Table("embassy", *_STATES)
    for embassy, per in sorted(per_embassy.items()):
        table.add_row(embassy, *(str(per.get(s, 0)) for s in _STATES))
    out.print(table)
    problems = [r for r in rows if r.state in ("failed", "unknown", "retry")]
    for r in problems:
        out.print(f"{r.state:>8} {r.email} ({r.embassy}): {r.reply}", markup=False)


@app.command()
def worker(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="One round over due work, then exit.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Send due rows of every sending campaign until SIGTERM/SIGINT (then finish in-flight, exit 0).

    On PostgreSQL any number of workers share campaigns; on SQLite only one runs.
    """
    settings = settings_for(ctx, config)
    # Warnings of the libraries underneath (SQLAlchemy's pool) as lines, not Python's bare
    # last-resort output with tracebacks.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    db = runtime.open_database(settings)

    def say(line: str) -> None:
        # One line each, however long: a log reader (journald, grep) sees one event per line.
        err.print(line, markup=False, highlight=False, soft_wrap=True)

    def report(r: SendReport) -> None:
        say(
            f"campaign {r.campaign}: {r.sent} sent, {r.failed} failed, {r.skipped} skipped ({r.state})"
        )

    try:
        stop = asyncio.Event()
        runner = Worker(settings, db, stop=stop, on_report=report, say=say)
        say(f"worker {runner.name} started")
        with one_line_database_faults():
            run_until_signal(runner.run(once=once), stop)
        say(f"worker {runner.name} stopped")
    finally:
        db.dispose()
