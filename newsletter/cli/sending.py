"""`explain`, `preview` and `send`: what a subscriber gets, and sending it."""

from __future__ import annotations

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
from newsletter.config import Settings
from newsletter.delivery.engine import SendReport
from newsletter.services import sending
from newsletter.services.actors import Actor, Scope

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
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write.")],
    text: Annotated[bool, typer.Option("--text", help="Write the plain-text part.")] = False,
    config: ConfigOption = None,
) -> None:
    """Write the digest one subscriber would get (HTML, or the text part with --text)."""
    settings = settings_for(ctx, config)
    shown = sending.preview_digest(settings, slug, subscriber, scope=Scope.all())
    body = shown.text if text else shown.html
    output.write_text(body, encoding="utf-8")
    err.print(f"wrote {output}: {shown.subject} ({len(body.encode()):,} bytes)", markup=False)


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
    """`sending.send_issue` with a progress bar on a terminal; SIGINT/SIGTERM stop it cleanly."""
    columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=quiet or not err.is_terminal) as bar:
        task = bar.add_task("send", total=None)
        return sending.send_issue(
            settings, slug, actor=actor, transport=transport, outbox=outbox,
            resend_unknown=resend_unknown, signals=True,
            on_pending=lambda n: bar.update(task, total=n),
            progress=lambda n: bar.advance(task, n),
        )  # fmt: skip


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
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Send an issue to every active subscriber not yet sent it (re-running never re-sends)."""
    settings = settings_for(ctx, config).overridden(
        {"smtp.host": smtp_host or None, "smtp.port": smtp_port or None}
    )
    if transport not in (None, "file", "smtp", "null"):
        raise typer.BadParameter("use file, smtp or null", param_hint="--transport")
    started = time.perf_counter()
    report = send_with_progress(
        settings,
        slug,
        actor=Actor.cli(),
        quiet=json_,
        transport=transport,
        outbox=outbox,
        resend_unknown=resend_unknown,
    )
    if json_:
        print_json(report.as_dict())
        return
    out.print(
        f"campaign {report.campaign} ({report.state}): {report.sent} sent, {report.failed} failed, "
        f"{report.skipped} skipped, {report.retry} to retry, {report.unknown} unknown; "
        f"{report.profiles} profiles rendered in {time.perf_counter() - started:.2f} s"
    )
    if report.recovered_unknown:
        out.print(
            f"{report.recovered_unknown} rows were mid-send when a sender stopped: marked unknown, "
            "not resent (see `newsletter campaign report`; --resend-unknown resends them)"
        )
    if report.reason:
        # Paused (staff resume after fixing the cause), or still sending after a back-off.
        out.print(f"{report.state}: {report.reason}", markup=False)
