"""`explain`, `preview` and `send`: what a subscriber gets, and sending it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlmodel import Session

from newsletter import runtime
from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    app,
    err,
    open_session,
    out,
    print_json,
    run_until_signal,
    settings_for,
)
from newsletter.config import Settings
from newsletter.delivery.campaigns import counts, prepare_send
from newsletter.delivery.compose import RecipientData, personalised, tailored
from newsletter.delivery.engine import SendEngine, SendReport
from newsletter.delivery.locks import SenderLock
from newsletter.issues import get_issue
from newsletter.models import Subscriber
from newsletter.subscriptions import store


def _recipient(session: Session, email: str) -> RecipientData:
    subscriber: Subscriber = store.find(session, email)
    assert subscriber.id is not None
    return RecipientData(
        subscriber_id=subscriber.id, email=subscriber.email, name=subscriber.name,
        language=subscriber.language, embassy=subscriber.embassy_code,
        sectors=store.sectors_of(session, [subscriber.id]).get(subscriber.id, ()),
        token_key=subscriber.token_key,
    )  # fmt: skip


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
    with open_session(settings) as session:
        context = runtime.issue_context(session, settings, slug)
        recipient = _recipient(session, subscriber)
    selection, _, _ = tailored(context, recipient)
    rows = [
        {"item": d.item_id, "section": d.section, "included": d.included, "reason": d.explain(),
         "reason_code": d.reason.value, "matched": list(d.matched)}
        for d in selection.decisions
    ]  # fmt: skip
    if json_:
        print_json(rows)
        return
    interests = ", ".join(sorted(selection.interests)) or "none (whole issue)"
    out.print(f"{recipient.email}: interests {interests}", markup=False)
    table = Table("item", "section", "in", "reason")
    for row in rows:
        table.add_row(
            str(row["item"]),
            str(row["section"]),
            "yes" if row["included"] else "no",
            str(row["reason"]),
        )
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
    with open_session(settings) as session:
        context = runtime.issue_context(session, settings, slug)
        recipient = _recipient(session, subscriber)
    _, digest = personalised(context, recipient)
    output.write_text(digest.text if text else digest.html, encoding="utf-8")
    size = len((digest.text if text else digest.html).encode())
    err.print(f"wrote {output}: {digest.subject} ({size:,} bytes)", markup=False)


def send_issue(
    settings: Settings,
    slug: str,
    *,
    transport: str | None = None,
    outbox: Path | None = None,
    quiet: bool = False,
    resend_unknown: bool = False,
) -> SendReport:
    engine = runtime.open_database(settings)
    try:
        with SenderLock(engine):
            with Session(engine, expire_on_commit=False) as session:
                stored = get_issue(session, slug)
                campaign, _ = prepare_send(session, stored.record, resend_unknown=resend_unknown)
                assert campaign.id is not None
                context = runtime.issue_context(session, settings, slug)
                by_state = counts(session, campaign.id)
            pending = sum(by_state.get(s, 0) for s in ("queued", "retry", "sending"))
            sender = runtime.make_transport(settings, transport, outbox)
            columns = (
                TextColumn("sending"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=err, disable=quiet or not err.is_terminal) as progress:
                task = progress.add_task("send", total=pending)
                send_engine = SendEngine(
                    db=engine, context=context, transport=sender, delivery=settings.delivery,
                    progress=lambda n: progress.advance(task, n),
                )  # fmt: skip
                return run_until_signal(send_engine.run(campaign.id), send_engine.stop)
    finally:
        engine.dispose()


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
    report = send_issue(
        settings,
        slug,
        transport=transport,
        outbox=outbox,
        quiet=json_,
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
