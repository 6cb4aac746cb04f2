"""`explain`, `preview` and `send`: what a subscriber gets, and sending it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    app,
    err,
    out,
    print_json,
    settings_for,
)
from newsletter.cli.output import write_output
from newsletter.config import Settings
from newsletter.delivery.engine import SendReport
from newsletter.services import send_plans, sending, test_sends
from newsletter.services.actors import Actor, Scope
from newsletter.services.send_plans import SendPlan

SubscriberOption = Annotated[str, typer.Option("--subscriber", help="The subscriber's address.")]


@app.command()
def explain(
    ctx: typer.Context,
    slug: str,
    subscriber: SubscriberOption,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Why each item of an issue is in or out of one subscriber's digest."""
    settings = settings_for(ctx, config)
    explained = sending.explain_digest(settings, slug, subscriber, scope=Scope.all())
    rows = [
        {"item": d.item, "section": d.section, "included": d.included, "reason": d.reason,
         "reason_code": d.reason_code, "matched": list(d.matched)}
        for d in explained.decisions
    ]  # fmt: skip
    if json_:
        print_json(rows)
        return
    interests = ", ".join(explained.interests) or "none (whole issue)"
    if explained.mission_defaults:
        interests += " (the mission's defaults: the subscriber chose no sectors)"
    out.print(f"{explained.email}: interests {interests}", markup=False)
    table = Table("item", "section", "in", "reason")
    for d in explained.decisions:
        table.add_row(d.item, d.section, "yes" if d.included else "no", d.reason)
    out.print(table)


@app.command()
def preview(
    ctx: typer.Context,
    slug: str,
    subscriber: SubscriberOption,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (default, or -: stdout).")
    ] = None,
    text: Annotated[bool, typer.Option("--text", help="Write the plain-text part.")] = False,
    config: ConfigOption = None,
) -> None:
    """Write the digest one subscriber would get (HTML, or the text part with --text)."""
    settings = settings_for(ctx, config)
    shown = sending.preview_digest(settings, slug, subscriber, scope=Scope.all())
    body = shown.text if text else shown.html
    where = write_output(output, body)
    err.print(f"wrote {where}: {shown.subject} ({len(body.encode()):,} bytes)", markup=False)


def send_with_progress(
    settings: Settings,
    slug: str,
    *,
    actor: Actor,
    quiet: bool = False,
    transport: str | None = None,
    outbox: Path | None = None,
    resend_unknown: bool = False,
) -> SendReport:
    """`sending.send_issue` with a progress bar on a terminal; SIGINT/SIGTERM stop it cleanly.

    A send that ends with its campaign paused raises `SendPausedError` (exit status 1, with
    the reason and the next step), for `send` and `demo` alike.
    """
    outcome = send_or_hand_off_with_progress(
        settings, slug, actor=actor, quiet=quiet, transport=transport, outbox=outbox,
        resend_unknown=resend_unknown, hand_off=False,
    )  # fmt: skip
    assert outcome.report is not None
    if problem := sending.paused_error(outcome.report, slug):
        raise problem
    return outcome.report


def send_or_hand_off_with_progress(
    settings: Settings,
    slug: str,
    *,
    actor: Actor,
    quiet: bool = False,
    transport: str | None = None,
    outbox: Path | None = None,
    resend_unknown: bool = False,
    hand_off: bool = True,
    announce: bool = False,
) -> sending.SendOutcome:
    """The send under a progress bar (on a terminal); `hand_off`: to a running sender if busy."""
    columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=quiet or not err.is_terminal) as bar:
        task = bar.add_task("send", total=None)
        kwargs: sending.EngineOptions = {
            "transport": transport, "outbox": outbox, "signals": True,
            "progress": lambda n: bar.advance(task, n),
        }  # fmt: skip

        def pending(n: int) -> None:
            # Said once the database answered (a send that cannot start says only why).
            if announce:
                err.print(f"{slug}: {sending.route(settings, transport, outbox).described}",
                          markup=False, soft_wrap=True)  # fmt: skip
            bar.update(task, total=n)

        if hand_off:
            return sending.send_or_hand_off(
                settings, slug, actor=actor, on_pending=pending, resend_unknown=resend_unknown,
                **kwargs,
            )  # fmt: skip
        prepared: list[sending.Prepared] = []
        report = sending.send_issue(
            settings, slug, actor=actor, on_pending=pending, on_prepared=prepared.append,
            resend_unknown=resend_unknown, **kwargs,
        )  # fmt: skip
        return sending.SendOutcome(
            sending.route(settings, transport, outbox), report=report,
            prepared=prepared[0] if prepared else None,
        )  # fmt: skip


def _print_plan(plan: SendPlan) -> None:
    route = plan.route
    campaign = f"campaign {plan.campaign}" if plan.campaign else "a new campaign"
    out.print(
        f"dry run, nothing changed: {plan.issue} ({campaign}), {route.described}",
        markup=False,
        soft_wrap=True,
    )
    if plan.refused:
        out.print(f"send would refuse: {plan.refused}", markup=False, soft_wrap=True)
    out.print(
        f"would send {plan.recipients} messages in {plan.profiles} profiles "
        f"to {len(plan.by_mission)} missions",
        markup=False,
        soft_wrap=True,
    )
    if plan.by_mission:
        table = Table("mission", "recipients")
        for mission, n in plan.by_mission.items():
            table.add_row(mission, str(n))
        out.print(table)
    for why, n in plan.skipped.items():
        out.print(f"skipped {n}: {why}", markup=False, soft_wrap=True)


def _confirm(plan: SendPlan) -> None:
    """At a terminal: the counts, then a question; anything but yes sends nothing."""
    _print_plan(plan)
    if plan.refused or not plan.recipients:
        return  # the send itself says why nothing goes
    if not typer.confirm(f"send {plan.recipients} messages now?", default=False, err=True):
        err.print("nothing sent", markup=False, soft_wrap=True)
        raise typer.Exit(1)


def _test_send(
    settings: Settings,
    slug: str,
    to: str,
    as_email: str | None,
    transport: str | None,
    outbox: Path | None,
    json_: bool,
) -> None:
    sent = test_sends.send_test(
        settings, slug, to, actor=Actor.cli(), scope=Scope.all(), as_email=as_email,
        transport=transport, outbox=outbox,
    )  # fmt: skip
    if json_:
        print_json(sent.as_dict())
        return
    whose = f"rendered as {sent.rendered_as}" if sent.rendered_as else "the whole issue"
    out.print(
        f"test send of {slug} ({whose}) to {sent.to}: {sent.reply}; {sent.route.described}; "
        "no campaign, no ledger row; its links name nobody",
        markup=False,
        soft_wrap=True,
    )


@app.command()
def send(
    ctx: typer.Context,
    slug: str,
    transport: Annotated[
        str | None, typer.Option("--transport", help="file, smtp or null.")
    ] = None,
    outbox: Annotated[Path | None, typer.Option("--outbox", help="Outbox folder (file).")] = None,
    smtp_host: Annotated[str | None, typer.Option("--smtp-host")] = None,
    smtp_port: Annotated[int | None, typer.Option("--smtp-port")] = None,
    resend_unknown: Annotated[
        bool, typer.Option("--resend-unknown", help="Also resend rows caught mid-send by a crash.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say who would get what; change nothing.")
    ] = False,
    test_to: Annotated[
        str | None,
        typer.Option(
            "--test-to",
            metavar="ADDRESS",
            help="Send one test digest to this address only (no ledger).",
        ),  # fmt: skip
    ] = None,
    as_email: Annotated[
        str | None,
        typer.Option(
            "--as", metavar="EMAIL", help="With --test-to: render it as this subscriber gets it."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask at a terminal.")] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Send an issue to every active subscriber not yet sent it (re-running never re-sends).

    Through `file` or `null` on an `smtp` instance it is a rehearsal, not a delivery.
    """
    settings = settings_for(ctx, config).overridden(
        {"smtp.host": smtp_host or None, "smtp.port": smtp_port or None}
    )
    if transport not in (None, "file", "smtp", "null"):
        raise typer.BadParameter("use file, smtp or null", param_hint="--transport")
    if as_email and not test_to:
        raise typer.BadParameter("only with --test-to ADDRESS", param_hint="--as")
    if test_to and dry_run:
        raise typer.BadParameter("a test send is one or the other", param_hint="--dry-run")
    if test_to:
        _test_send(settings, slug, test_to, as_email, transport, outbox, json_)
        return
    actor = Actor.cli()

    def plan() -> SendPlan:
        return send_plans.plan_send(
            settings, slug, actor=actor, scope=Scope.all(), transport=transport, outbox=outbox,
            resend_unknown=resend_unknown,
        )  # fmt: skip

    if dry_run:
        planned = plan()
        if json_:
            print_json(planned.as_dict())
        else:
            _print_plan(planned)
        return
    route = sending.route(settings, transport, outbox)
    if route.transport == "smtp" and not settings.dkim.enabled:
        err.print(
            "warning: mail goes out without a DKIM signature, which Gmail, Yahoo and Outlook "
            "hold against bulk mail; set [dkim] (see `newsletter check`)", markup=False,
        )  # fmt: skip
    if not yes and not json_ and sys.stdin.isatty():
        _confirm(plan())
    started = time.perf_counter()
    outcome = send_or_hand_off_with_progress(
        settings, slug, actor=actor, quiet=json_, transport=transport, outbox=outbox,
        resend_unknown=resend_unknown, announce=True,
    )  # fmt: skip
    if outcome.handed_off is not None:
        handed = outcome.handed_off
        nothing = ""
        if not handed.prepared.pending:
            nothing = sending.why_nothing_sent(settings, slug, handed.prepared.campaign)
        _say_handed_off(slug, handed, json_, nothing)
        return
    report = outcome.report
    assert report is not None
    nothing = ""
    if sending.found_nothing(report) and report.state != "paused":
        nothing = sending.why_nothing_sent(settings, slug, report.campaign)
    problem = sending.paused_error(report, slug)
    if json_:
        print_json({**report.as_dict(), "rehearsal": route.rehearsal, "transport": route.transport,
                    "nothing_sent": nothing})  # fmt: skip
    else:
        _print_report(report, started)
        if nothing:
            out.print(nothing, markup=False, soft_wrap=True)
    if problem is not None:
        raise problem


def _say_handed_off(slug: str, handed: sending.HandedOff, json_: bool, nothing: str) -> None:
    c = handed.prepared.campaign
    if json_:
        print_json({"campaign": c, "handed_off": handed.holder, "waiting": handed.prepared.pending,
                    "nothing_sent": nothing})  # fmt: skip
        return
    if nothing:
        out.print(nothing, markup=False, soft_wrap=True)
        return
    out.print(
        f"campaign {c} of {slug}: {handed.prepared.pending} messages queued for the sender "
        f"already running on this database ({handed.holder}), which sends them; follow it "
        f"with `newsletter campaign status {c}`",
        markup=False,
        soft_wrap=True,
    )


def _print_report(report: SendReport, started: float) -> None:
    out.print(
        f"campaign {report.campaign} ({report.state}): {report.sent} sent, {report.failed} failed, "
        f"{report.skipped} skipped, {report.retry} to retry, {report.unknown} unknown; "
        f"{report.profiles} profiles rendered in {time.perf_counter() - started:.2f} s",
        soft_wrap=True,
    )
    if report.recovered_unknown:
        out.print(
            f"{report.recovered_unknown} rows were mid-send when a sender stopped: marked unknown, "
            "not resent (see `newsletter campaign report`; --resend-unknown resends them)",
            soft_wrap=True,
        )
    if report.reason and report.state != "paused":
        # Still sending after a back-off (a pause is the error line).
        out.print(f"{report.state}: {report.reason}", markup=False, soft_wrap=True)
