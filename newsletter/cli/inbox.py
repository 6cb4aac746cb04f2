"""`inbox ingest PATH...` and `inbox fetch`: the mail that comes back, read and acted on."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from newsletter.actors import Actor
from newsletter.cli.base import ConfigOption, JsonOption, err, group, print_json, settings_for
from newsletter.services import inbox as service

inbox_app = group(
    "inbox", "Read the mail that comes back: bounces, complaints, mailto unsubscribes."
)

DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Say what the mail would change; change nothing.")
]


@inbox_app.command("ingest")
def inbox_ingest(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(help="Messages (.eml), folders of .eml, mbox files or maildirs."),
    ],
    dry_run: DryRun = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Sort every message and act: hard bounces disable and mark their ledger row, soft ones
    count; complaints suppress; `unsubscribe <token>` mails unsubscribe; automatic replies are
    counted; the rest is listed for a person. Reading the same mail again changes nothing."""
    report = service.ingest_inbox(
        settings_for(ctx, config), paths, actor=Actor.cli(), dry_run=dry_run
    )
    _show(report, json_)


@inbox_app.command("fetch")
def inbox_fetch(
    ctx: typer.Context,
    dry_run: DryRun = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """The new mail of the [inbox] IMAP folder, acted on as `inbox ingest` does; each message
    read is then flagged on the server (acted on: also seen, or moved to done_folder), so the
    next fetch skips it. Mail left for a person stays unread."""
    report = service.fetch_inbox(settings_for(ctx, config), actor=Actor.cli(), dry_run=dry_run)
    _show(report, json_)


def _show(report: service.InboxReport, json_: bool) -> None:
    summary: dict[str, object] = {**report.summary}
    if report.dry_run:
        summary["dry_run"] = True
    if json_:
        print_json({
            **summary, "messages_read": [asdict(m) for m in report.messages],
            "for_a_person_messages": [asdict(m) for m in report.for_a_person],
        })  # fmt: skip
        return
    for m in report.messages:
        if m.outcome != service.LEFT:
            said = f" {m.email}" if m.email else ""
            _say(
                f"{m.outcome:>18} {m.kind:<11}{said} {m.source}"
                + (f": {m.detail}" if m.detail else "")
            )
    if report.for_a_person:
        _say("for a person to read:")
        for m in report.for_a_person:
            _say(f"  {m.source}: {m.detail}")
    counts = ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in report.summary.items())
    _say(counts + (" (dry run)" if report.dry_run else ""))


def _say(line: str) -> None:
    # One line per message whatever the terminal width, and the remote text shown as written.
    err.print(line, markup=False, highlight=False, soft_wrap=True)
