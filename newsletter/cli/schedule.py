"""`schedule`, `digest schedule|list|cancel` and `run`: sends at each mission's local hour."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from typing import Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from newsletter import runtime
from newsletter.actors import Actor
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
from newsletter.daemon import Daemon, admin_server, web_server
from newsletter.services import scheduling as service


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


def _short(iso: object) -> str:
    """'2030-01-07 09:00 +08:00' from an ISO 8601 time, for tables (JSON keeps ISO 8601)."""
    value = dt.datetime.fromisoformat(str(iso))
    return value.strftime("%Y-%m-%d %H:%M ") + value.isoformat()[-6:]


def _plan_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(
        "id", "issue", "timezone", "local", "Beijing", "UTC", "to", "sent", "missed", "state",
        "campaign", "later because",
    )  # fmt: skip
    for r in rows:
        table.add_row(
            str(r["id"]), str(r["issue"]), str(r["timezone"]), _short(r["next_run_local"]),
            _short(r["next_run_beijing"])[:16], _short(r["next_run_utc"])[:16],
            str(r["recipients"]), str(r["sent"]),
            str(r["missed"]), str(r["state"]), f"{r['campaign']} {r['campaign_state']}",
            str(r.get("moved") or ""),
        )  # fmt: skip
    return table


def _preview_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("timezone", "local", "Beijing", "UTC", "missions", "to", "later because")
    for r in rows:
        table.add_row(
            str(r["timezone"]), _short(r["next_run_local"]), _short(r["next_run_beijing"])[:16],
            _short(r["next_run_utc"])[:16],
            " ".join(r["missions"]), str(r["recipients"]), str(r["moved"] or ""),
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
            "--working-days",
            help="A mission on its weekend, a public holiday of its host or a closure gets its "
            "next working day.",
        ),
    ] = False,
    at: Annotated[
        str | None,
        typer.Option("--at", help="One absolute time with offset, e.g. 2020-08-04T09:00+08:00."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show the sends it would plan and why; store nothing."),
    ] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Schedule an issue: one job per time zone (and date) among its recipients' missions."""
    settings = settings_for(ctx, config)
    try:
        when = service.when(settings, local=local, date=date, working_days=working_days, at=at)
    except service.ConflictingTimesError as exc:
        raise typer.BadParameter(str(exc)) from None
    if dry_run:
        preview = [p.as_dict() for p in service.preview_issue(settings, slug, when)]
        if json_:
            print_json(preview)
            return
        out.print(_preview_table(preview))
        err.print(
            f"dry run: {sum(int(str(p['recipients'])) for p in preview)} recipients in "
            f"{len(preview)} sends; nothing was scheduled",
            markup=False,
        )
        return
    scheduled = service.schedule_issue(settings, slug, when, actor=Actor.cli())
    rows = [p.as_dict() for p in scheduled.plans]
    if json_:
        print_json(rows)
        return
    out.print(_plan_table(rows))
    err.print(
        f"campaign {scheduled.campaign}: {scheduled.recipients} recipients in {len(rows)} "
        "scheduled sends; `newsletter run` fires them",
        markup=False,
    )


@schedule_app.command("list")
def schedule_list(
    ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False
) -> None:
    """Every scheduled send with its time in UTC and locally, its recipients and state."""
    rows = [v.as_dict() for v in service.list_plans(settings_for(ctx, config))]
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

    def said(done: service.CancelledPlan) -> None:
        err.print(f"plan {done.plan} cancelled; {done.skipped} unsent rows skipped")

    service.cancel_plans(
        settings, plan_ids or (), issue=issue, actor=Actor.cli(), on_cancelled=said
    )


@digest_app.command("schedule")
def digest_schedule(
    ctx: typer.Context,
    cron: Annotated[str, typer.Option("--cron", help='Five-field crontab, e.g. "0 9 * * MON".')],
    local: Annotated[
        bool, typer.Option("--local", help="Read the cron in each mission's local time.")
    ] = False,
    working_days: Annotated[
        bool,
        typer.Option(
            "--working-days",
            help="A mission on its weekend, a public holiday or a closure gets the run's mail "
            "at its next working morning.",
        ),
    ] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Send every subscriber, on a cron, the issues they have not received yet."""
    settings = settings_for(ctx, config)
    scheduled = service.schedule_digest(
        settings, cron=cron, local=local, working_days=working_days, actor=Actor.cli()
    )
    if json_:
        print_json([j.as_dict() for j in scheduled.jobs])
        return
    err.print(
        f"digest {scheduled.digest}: {len(scheduled.zones)} jobs "
        f"({'local' if local else 'UTC'} {cron}"
        f"{', working days' if working_days else ''})",
        markup=False,
    )


@digest_app.command("list")
def digest_list(ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False) -> None:
    """Each digest job (one per zone when local) with its next run and last run."""
    rows = [j.as_dict() for j in service.list_digests(settings_for(ctx, config))]
    if json_:
        print_json(rows)
        return
    table = Table(
        "id", "cron", "timezone", "next run (local)", "days", "state", "last run", "queued"
    )  # fmt: skip
    for r in rows:
        table.add_row(
            str(r["id"]), str(r["cron"]), str(r["timezone"]), str(r["next_run_local"]),
            "working" if r["working_days"] else "all", str(r["state"]),
            str(r["last_run_state"] or "-"), str(r["last_enqueued"] or 0),
        )  # fmt: skip
    out.print(table)


@digest_app.command("cancel")
def digest_cancel(
    ctx: typer.Context,
    digest_id: Annotated[int, typer.Argument(help="Digest id (see `newsletter digest list`).")],
    config: ConfigOption = None,
) -> None:
    """Stop a recurring digest; rows its past runs queued still go out."""
    removed = service.cancel_digest(settings_for(ctx, config), digest_id, actor=Actor.cli())
    err.print(f"digest {digest_id} cancelled ({removed} jobs removed)")


@app.command()
def run(
    ctx: typer.Context,
    web: Annotated[bool, typer.Option("--web", help="Also serve the web pages.")] = False,
    host: Annotated[str, typer.Option("--host", help="Web address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Web port.")] = 8000,
    admin: Annotated[bool, typer.Option("--admin", help="Also serve the staff console.")] = False,
    admin_host: Annotated[
        str, typer.Option("--admin-host", help="Console address to listen on.")
    ] = "127.0.0.1",
    admin_port: Annotated[
        int, typer.Option("--admin-port", min=0, max=65535, help="Console port.")
    ] = 8001,
    config: ConfigOption = None,
) -> None:
    """Scheduler, sender, (with --web) the web pages and (with --admin) the staff console, until
    SIGTERM/SIGINT (then exit 0).

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
            admin=admin_server(settings, admin_host, admin_port) if admin else None,
        )
        err.print(f"run: started (pid {os.getpid()})", markup=False)
        run_until_signal(daemon.run(), stop)
        err.print("run: stopped", markup=False)
    finally:
        db.dispose()
