"""`campaign list|status|pause|resume|cancel|report` and `worker`."""

from __future__ import annotations

import asyncio
import csv
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from newsletter import runtime
from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    app,
    err,
    group,
    open_session,
    out,
    print_json,
    run_until_signal,
    settings_for,
)
from newsletter.delivery.campaigns import (
    cancel,
    counts_by_embassy,
    get_campaign,
    ledger,
    list_summaries,
    pause,
    requeue_failed,
    resume,
    summarise,
)
from newsletter.delivery.engine import SendReport
from newsletter.models import utcnow
from newsletter.scheduling.jobs import plan_job_id, remove_jobs
from newsletter.scheduling.plans import cancel_plan, planned_ids
from newsletter.services.worker import Worker, one_line_database_faults
from newsletter.subscriptions.lists import unformula

campaign_app = group("campaign", "Follow and control campaigns.")


@campaign_app.command("list")
def campaign_list(
    ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False
) -> None:
    """Campaigns with their ledger counts."""
    settings = settings_for(ctx, config)
    with open_session(settings) as session:
        rows = [s.as_dict() for s in list_summaries(session)]
    if json_:
        print_json(rows)
        return
    table = Table("id", "issue", "state", "total", "sent", "failed", "retry", "unknown", "skipped")
    for r in rows:
        table.add_row(
            *(
                str(r[k])
                for k in (
                    "id",
                    "issue",
                    "state",
                    "total",
                    "sent",
                    "failed",
                    "retry",
                    "unknown",
                    "skipped",
                )
            )
        )
    out.print(table)


@campaign_app.command("status")
def campaign_status(
    ctx: typer.Context, campaign_id: int, config: ConfigOption = None, json_: JsonOption = False
) -> None:
    """One campaign's state and ledger counts."""
    settings = settings_for(ctx, config)
    with open_session(settings) as session:
        summary = summarise(session, get_campaign(session, campaign_id)).as_dict()
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
    with open_session(settings_for(ctx, config)) as session:
        pause(session, get_campaign(session, campaign_id))
    err.print(f"campaign {campaign_id} paused")


@campaign_app.command("resume")
def campaign_resume(
    ctx: typer.Context, campaign_id: CampaignId, config: ConfigOption = None
) -> None:
    """Let a paused campaign send again (a running `worker`, or `newsletter send`, picks it up)."""
    with open_session(settings_for(ctx, config)) as session:
        resume(session, get_campaign(session, campaign_id))
    err.print(f"campaign {campaign_id} resumed")


@campaign_app.command("cancel")
def campaign_cancel(
    ctx: typer.Context, campaign_id: CampaignId, config: ConfigOption = None
) -> None:
    """Stop for good: rows not yet sent are skipped, and its planned sends are cancelled."""
    settings = settings_for(ctx, config)
    with open_session(settings) as session:
        cancelled = cancel(session, get_campaign(session, campaign_id))
        plans = planned_ids(session, campaign_id)
        for plan_id in plans:
            cancel_plan(session, plan_id, utcnow())
        if plans:
            remove_jobs(session.get_bind(), [plan_job_id(p) for p in plans])  # type: ignore[arg-type]
    flight = (
        f"; {cancelled.in_flight} messages were already on the wire and are recorded as the "
        f"server answers (`newsletter campaign status {campaign_id}`)"
        if cancelled.in_flight
        else ""
    )
    err.print(
        f"campaign {campaign_id} cancelled; {cancelled.skipped} unsent rows skipped, "
        f"{len(plans)} plans cancelled{flight}"
    )


@campaign_app.command("requeue-failed")
def campaign_requeue_failed(
    ctx: typer.Context, campaign_id: CampaignId, config: ConfigOption = None
) -> None:
    """Failed rows of still-active subscribers wait again (after fixing what made them fail)."""
    with open_session(settings_for(ctx, config)) as session:
        requeued = requeue_failed(session, get_campaign(session, campaign_id))
    err.print(
        f"campaign {campaign_id}: {requeued} failed rows queued again; "
        "`newsletter send` or a running `worker` sends them"
    )


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
    with open_session(settings_for(ctx, config)) as session:
        summary = summarise(session, get_campaign(session, campaign_id)).as_dict()
        rows = ledger(session, campaign_id)
    per_embassy = counts_by_embassy(rows)
    if csv_file:
        with csv_file.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["email", "embassy", "state", "attempts", "reply", "sent_at", "message_id"]
            )
            for r in rows:
                sent = r.sent_at.isoformat() if r.sent_at else ""
                cells = [r.email, r.embassy, r.state, str(r.attempts), r.reply, sent, r.message_id]
                writer.writerow([unformula(c) for c in cells])
        err.print(f"wrote {csv_file}: {len(rows)} recipients")
    if json_:
        print_json({**summary, "by_embassy": per_embassy, "recipients": [asdict(r) for r in rows]})
        return
    states = ["sent", "failed", "retry", "queued", "sending", "unknown", "skipped"]
    table = Table("embassy", *states)
    for embassy, per in sorted(per_embassy.items()):
        table.add_row(embassy, *(str(per.get(s, 0)) for s in states))
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
