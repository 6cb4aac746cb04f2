"""`campaign list|status|report|pause|resume|cancel|requeue-failed|resend-unknown`, `worker`."""

from __future__ import annotations

import asyncio
import csv
import io
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
from newsletter.cli.output import write_output
from newsletter.delivery.campaigns import CampaignSummary, LedgerRow
from newsletter.delivery.engine import SendReport
from newsletter.services import campaign_desk as desk
from newsletter.services import campaigns as service
from newsletter.services.campaign_desk import Control
from newsletter.services.worker import Worker, one_line_database_faults
from newsletter.subscriptions.lists import unformula
from newsletter.subscriptions.returned_mail import BOUNCED_REPLY

campaign_app = group("campaign", "Follow and control campaigns.")
_COLUMNS = ("id", "issue", "state", "total", "sent", "failed", "retry", "unknown", "skipped",
            "transport", "rehearsal")  # fmt: skip


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
    desk.control(settings_for(ctx, config), campaign_id, Control.PAUSE, actor=Actor.cli())
    err.print(f"campaign {campaign_id} paused")


@campaign_app.command("resume")
def campaign_resume(
    ctx: typer.Context, campaign_id: CampaignId, config: ConfigOption = None
) -> None:
    """Let a paused campaign send again; says what will send it (a worker, `run`, or `send`)."""
    settings = settings_for(ctx, config)
    desk.control(settings, campaign_id, Control.RESUME, actor=Actor.cli())
    resumed = service.campaign_status(settings, campaign_id)
    sender = service.running_sender(settings)
    err.print(f"campaign {campaign_id} resumed; {_who_sends(resumed, sender)}", markup=False)


def _who_sends(campaign: CampaignSummary, sender: service.SenderWatch) -> str:
    if campaign.state == "scheduled":
        return (
            "its rows wait for their planned sends (`newsletter schedule list`), which a running "
            "`newsletter run` fires at their time"
        )
    send_now = f"`newsletter send {campaign.issue}` sends it now"
    if not sender.known:
        return (
            f"a running `newsletter worker` or `newsletter run` picks it up; if none runs, "
            f"{send_now}"
        )
    if sender.holder:
        return f"the running sender ({sender.holder}) picks it up"
    return (
        f"no sender is running on this database: {send_now}, or start `newsletter worker` "
        "(or `newsletter run`) to send it in the background"
    )


@campaign_app.command("cancel")
def campaign_cancel(
    ctx: typer.Context, campaign_id: CampaignId, config: ConfigOption = None
) -> None:
    """Stop for good: rows not yet sent are skipped, and its planned sends are cancelled."""
    done = desk.control(settings_for(ctx, config), campaign_id, Control.CANCEL, actor=Actor.cli())
    in_flight, plans = done.detail["in_flight"], done.detail["plans"]
    flight = (
        f"; {in_flight} messages were already on the wire and are recorded as the "
        f"server answers (`newsletter campaign status {campaign_id}`)"
        if in_flight
        else ""
    )
    err.print(
        f"campaign {campaign_id} cancelled; {done.detail['skipped']} unsent rows skipped, "
        f"{len(plans) if isinstance(plans, list) else 0} plans cancelled{flight}"
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
    done = desk.control(
        settings_for(ctx, config), campaign_id, Control.RESEND_UNKNOWN, actor=Actor.cli()
    )
    requeued = done.detail["requeued"]
    err.print(
        f"campaign {campaign_id}: {requeued} rows of unknown fate queued again (each may "
        "already have arrived: they may get it twice); `newsletter send` or a running `worker` "
        "sends them"
    )


_STATES = ("sent", "failed", "retry", "queued", "sending", "unknown", "skipped")


def _csv_text(rows: Sequence[LedgerRow]) -> str:
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(["email", "embassy", "state", "attempts", "reply", "sent_at", "message_id"])
    for r in rows:
        sent = r.sent_at.isoformat() if r.sent_at else ""
        cells = [r.email, r.embassy, r.state, str(r.attempts), r.reply, sent, r.message_id]
        writer.writerow([unformula(c) for c in cells])
    return handle.getvalue()


@campaign_app.command("report")
def campaign_report(
    ctx: typer.Context,
    campaign_id: CampaignId,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Write every recipient to FILE.")
    ] = None,
    recipients: Annotated[
        bool, typer.Option("--recipients", help="List every recipient (text), not only problems.")
    ] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Every recipient's state with the SMTP reply, and counts per embassy and state."""
    report = service.campaign_report(settings_for(ctx, config), campaign_id, scope=Scope.all())
    rows, per_embassy = report.recipients, report.by_embassy
    if csv_file:
        err.print(f"wrote {write_output(csv_file, _csv_text(rows))}: {len(rows)} recipients")
    if json_:
        summary = report.summary.as_dict()
        print_json({**summary, "by_embassy": per_embassy, "recipients": [asdict(r) for r in rows]})
        return
    table = Table("embassy", *_STATES)
    for embassy, per in sorted(per_embassy.items()):
        table.add_row(embassy, *(str(per.get(s, 0)) for s in _STATES))
    out.print(table)
    if recipients:
        listed = Table("email", "embassy", "state", "attempts", "sent at", "reply")
        for r in rows:
            sent = r.sent_at.isoformat(timespec="seconds") if r.sent_at else ""
            listed.add_row(r.email, r.embassy, r.state, str(r.attempts), sent, r.reply)
        out.print(listed)
        return
    # Rows to act on, and sent rows whose mailbox sent the message back since (inbox, bounces).
    problems = [
        r for r in rows
        if r.state in ("failed", "unknown", "retry") or r.reply.startswith(BOUNCED_REPLY)
    ]  # fmt: skip
    for r in problems:
        state = "bounced" if r.reply.startswith(BOUNCED_REPLY) else r.state
        out.print(f"{state:>8} {r.email} ({r.embassy}): {r.reply}", markup=False)


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
