"""`schedule`, `digest schedule|list|cancel` and `run`: sends at each mission's local hour."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import Engine
from sqlmodel import Session
from typer.core import TyperGroup

from newsletter import runtime
from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    app,
    err,
    out,
    print_json,
    run_until_signal,
    settings_for,
)
from newsletter.config import Settings
from newsletter.daemon import Daemon, web_server
from newsletter.delivery.campaigns import open_campaign
from newsletter.issues import get_issue
from newsletter.models import utcnow
from newsletter.scheduling import digests, jobs, plans
from newsletter.scheduling.rules import (
    When,
    in_local_time,
    offset_zone_name,
    parse_date,
    parse_instant,
    parse_local_time,
    plan_send,
)


class _AddByDefault(TyperGroup):
    """`newsletter schedule SLUG ...` is short for `newsletter schedule add SLUG ...`."""

    # `Any`: typer 0.29 types this with its vendored click's Context.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["add", *args]
        return super().parse_args(ctx, args)


schedule_app = typer.Typer(
    cls=_AddByDefault, no_args_is_help=True,
    help="Send an issue at each mission's local hour: `newsletter schedule SLUG --local 09:00`.",
)  # fmt: skip
app.add_typer(schedule_app, name="schedule")
digest_app = typer.Typer(no_args_is_help=True, help="Recurring digests of issues not yet received.")
app.add_typer(digest_app, name="digest")


@contextmanager
def _database(settings: Settings) -> Iterator[tuple[Engine, Session]]:
    """The engine (the job store shares it) and a session on it."""
    engine = runtime.open_database(settings)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield engine, session
    finally:
        engine.dispose()


def _grace(settings: Settings) -> dt.timedelta:
    return dt.timedelta(hours=settings.schedule.misfire_grace_hours)


def _when(
    settings: Settings, local: str | None, date: str | None, working_days: bool, at: str | None
) -> When:
    if at is not None:
        if local is not None or date is not None or working_days:
            raise typer.BadParameter(
                "--at is one absolute time; leave out --local, --date and --working-days"
            )
        instant = parse_instant(at)
        return When(at=instant, given_in=offset_zone_name(instant))
    return When(
        local=parse_local_time(local or settings.schedule.local_time),
        day=parse_date(date) if date else None,
        working_days=working_days,
    )


def _short(iso: object) -> str:
    """'2030-01-07 09:00 +08:00' from an ISO 8601 time, for tables (JSON keeps ISO 8601)."""
    value = dt.datetime.fromisoformat(str(iso))
    return value.strftime("%Y-%m-%d %H:%M ") + value.isoformat()[-6:]


def _plan_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(
        "id", "issue", "timezone", "local", "UTC", "to", "sent", "missed", "state", "campaign"
    )
    for r in rows:
        table.add_row(
            str(r["id"]), str(r["issue"]), str(r["timezone"]), _short(r["next_run_local"]),
            _short(r["next_run_utc"])[:16], str(r["recipients"]), str(r["sent"]),
            str(r["missed"]), str(r["state"]), f"{r['campaign']} {r['campaign_state']}",
        )  # fmt: skip
    return table


@schedule_app.command("add")
def schedule_add(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="The issue (see `newsletter issue list`).")],
    local: Annotated[
        str | None,
        typer.Option("--local", help="HH:MM on each mission's own clock (default from config)."),
    ] = None,
    date: Annotated[
        str | None,
        typer.Option(
            "--date",
            help="YYYY-MM-DD (default: the first date on which HH:MM is still ahead everywhere).",
        ),
    ] = None,
    working_days: Annotated[
        bool,
        typer.Option(
            "--working-days", help="A mission whose weekend it is gets its next working day."
        ),
    ] = False,
    at: Annotated[
        str | None,
        typer.Option("--at", help="One absolute time with offset, e.g. 2020-08-04T09:00+08:00."),
    ] = None,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Schedule an issue: one job per time zone (and date) among its recipients' missions."""
    settings = settings_for(ctx, config)
    when = _when(settings, local, date, working_days, at)
    now = utcnow()
    with _database(settings) as (db, session):
        stored = get_issue(session, slug)
        campaign = plans.prepare_campaign(session, stored.record)
        created = plans.create_plans(
            session, campaign, slug,
            lambda missions: plan_send(missions, when, grace=_grace(settings), now=now), now=now,
        )  # fmt: skip
        jobs.add_plan_jobs(db, created)
        views = plans.list_plans(session, now=now, campaign_id=campaign.id)
    ids = {p.id for p in created}
    rows = [v.as_dict() for v in views if v.id in ids]
    if json_:
        print_json(rows)
        return
    out.print(_plan_table(rows))
    recipients = sum(p.recipients for p in created)
    err.print(
        f"campaign {campaign.id}: {recipients} recipients in {len(rows)} scheduled sends; "
        "`newsletter run` fires them",
        markup=False,
    )


@schedule_app.command("list")
def schedule_list(
    ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False
) -> None:
    """Every scheduled send with its time in UTC and locally, its recipients and state."""
    settings = settings_for(ctx, config)
    with _database(settings) as (_, session):
        rows = [v.as_dict() for v in plans.list_plans(session, now=utcnow())]
    if json_:
        print_json(rows)
        return
    out.print(_plan_table(rows))


@schedule_app.command("cancel")
def schedule_cancel(
    ctx: typer.Context,
    plan_ids: Annotated[
        list[int] | None, typer.Argument(help="Plan ids (see `newsletter schedule list`).")
    ] = None,
    issue: Annotated[
        str | None, typer.Option("--issue", help="Cancel every planned send of this issue.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Cancel planned sends: their jobs are removed and their unsent rows are skipped."""
    settings = settings_for(ctx, config)
    if not plan_ids and not issue:
        raise typer.BadParameter("give plan ids or --issue SLUG", param_hint="PLAN_IDS")
    with _database(settings) as (db, session):
        ids = list(plan_ids or [])
        if issue:
            campaign, _ = open_campaign(session, get_issue(session, issue).record)
            ids += plans.planned_ids(session, campaign.id or 0)
        for plan_id in dict.fromkeys(ids):
            skipped = plans.cancel_plan(session, plan_id, utcnow())
            jobs.remove_jobs(db, [jobs.plan_job_id(plan_id)])
            err.print(f"plan {plan_id} cancelled; {skipped} unsent rows skipped")


def _iso(value: dt.datetime | None, timezone: str = "") -> str | None:
    return None if value is None else in_local_time(value, timezone or "UTC").isoformat()


@digest_app.command("schedule")
def digest_schedule(
    ctx: typer.Context,
    cron: Annotated[str, typer.Option("--cron", help='Five-field crontab, e.g. "0 9 * * MON".')],
    local: Annotated[
        bool, typer.Option("--local", help="Read the cron in each mission's local time.")
    ] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Send every subscriber, on a cron, the issues they have not received yet."""
    settings = settings_for(ctx, config)
    with _database(settings) as (db, session):
        # Refuse a bad expression, or one that never fires, before anything is stored.
        jobs.refuse_never_firing(cron, utcnow())
        digest = digests.create_digest(session, cron=cron, local=local, now=utcnow())
        zones = digests.digest_zones(session, digest)
        jobs.add_digest_jobs(db, digest, zones, _grace(settings))
        rows = _digest_rows(session, db)
    mine = [r for r in rows if r["id"] == digest.id]
    if json_:
        print_json(mine)
        return
    err.print(
        f"digest {digest.id}: {len(zones)} jobs ({'local' if local else 'UTC'} {cron})",
        markup=False,
    )


def _digest_rows(session: Session, db: Engine) -> list[dict[str, Any]]:
    next_runs = jobs.next_run_times(db)
    last = digests.last_runs(session)
    rows = []
    for digest in digests.all_digests(session):
        assert digest.id is not None
        for timezone in digests.digest_zones(session, digest):
            when = next_runs.get(jobs.digest_job_id(digest.id, timezone))
            run = last.get((digest.id, timezone))
            rows.append({
                "id": digest.id, "cron": digest.cron, "local": digest.local,
                "timezone": timezone or "UTC", "state": str(digest.state),
                "next_run_utc": _iso(when), "next_run_local": _iso(when, timezone),
                "last_run_at": _iso(run.ran_at) if run else None,
                "last_run_state": run.state if run else None,
                "last_enqueued": run.enqueued if run else None,
            })  # fmt: skip
    return rows


@digest_app.command("list")
def digest_list(ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False) -> None:
    """Each digest job (one per zone when local) with its next run and last run."""
    settings = settings_for(ctx, config)
    with _database(settings) as (db, session):
        rows = _digest_rows(session, db)
    if json_:
        print_json(rows)
        return
    table = Table("id", "cron", "timezone", "next run (local)", "state", "last run", "queued")
    for r in rows:
        table.add_row(
            str(r["id"]), str(r["cron"]), str(r["timezone"]), str(r["next_run_local"]),
            str(r["state"]), str(r["last_run_state"] or "-"), str(r["last_enqueued"] or 0),
        )  # fmt: skip
    out.print(table)


@digest_app.command("cancel")
def digest_cancel(
    ctx: typer.Context,
    digest_id: Annotated[int, typer.Argument(help="Digest id (see `newsletter digest list`).")],
    config: ConfigOption = None,
) -> None:
    """Stop a recurring digest; rows its past runs queued still go out."""
    settings = settings_for(ctx, config)
    with _database(settings) as (db, session):
        digests.cancel_digest(session, digest_id)
        mine = [
            job_id for job_id in jobs.next_run_times(db)
            if jobs.parse_job_id(job_id)[:2] == ("digest", digest_id)
        ]  # fmt: skip
        jobs.remove_jobs(db, mine)
    err.print(f"digest {digest_id} cancelled ({len(mine)} jobs removed)")


@app.command()
def run(
    ctx: typer.Context,
    web: Annotated[bool, typer.Option("--web", help="Also serve the web pages.")] = False,
    host: Annotated[str, typer.Option("--host", help="Web address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Web port.")] = 8000,
    config: ConfigOption = None,
) -> None:
    """Scheduler, sender and (with --web) the web pages, until SIGTERM/SIGINT (then exit 0).

    One process per database fires jobs; another `run` stands by and takes over when it dies.
    """
    settings = settings_for(ctx, config)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    db = runtime.open_database(settings)
    try:
        server = web_server(settings, host, port) if web else None
        stop = asyncio.Event()
        daemon = Daemon(
            settings,
            db,
            stop=stop,
            say=lambda m: err.print(m, markup=False, soft_wrap=True),
            web=server,
        )
        err.print(f"run: started (pid {os.getpid()})", markup=False)
        run_until_signal(daemon.run(), stop)
        err.print("run: stopped", markup=False)
    finally:
        db.dispose()
