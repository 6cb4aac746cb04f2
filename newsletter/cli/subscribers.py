"""`subscribers import|export|list|add|show|remove|unsuppress|handover|edit|pending|approve|reject`."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    err,
    group,
    out,
    print_json,
    settings_for,
)
from newsletter.cli.output import output_folder, write_output
from newsletter.errors import NotFoundError
from newsletter.models import SubscriberStatus
from newsletter.services import subscribers as service
from newsletter.services.actors import Actor, Scope
from newsletter.subscriptions import export
from newsletter.subscriptions.erasure import NotListedError
from newsletter.subscriptions.lists import BadRowsError, parse_sector_codes

subscribers_app = group("subscribers", "Manage subscriber lists.")
# The shell's user is who the audit trail names; the CLI sees every mission.
EVERYWHERE = Scope.all()
PROGRESS_FROM_ROWS = 500


def note(text: str) -> None:
    """One line on stderr, unwrapped: staff grep these for file:line and addresses."""
    typer.echo(text, err=True)


def _mail_failures(results: list[service.MailResult]) -> int:
    for result in results:
        if not result.accepted:
            note(f"confirmation to {result.request.address} not sent: {result.reply}")
    return sum(1 for result in results if result.accepted)


EmbassyFilter = Annotated[str | None, typer.Option("--embassy", help="Embassy code.")]
SectorFilter = Annotated[str | None, typer.Option("--sector", help="Sector code.")]
StatusFilter = Annotated[SubscriberStatus | None, typer.Option("--status")]


@subscribers_app.command("import")
def subscribers_import(
    ctx: typer.Context,
    paths: Annotated[
        list[Path], typer.Argument(help="CSV files or folders of <embassy-code>.csv.")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and report; change nothing.")
    ] = False,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Import good rows, skip bad ones.")
    ] = False,
    require_confirmation: Annotated[
        bool,
        typer.Option(
            "--require-confirmation",
            help="New subscribers start pending and are sent a link to confirm.",
        ),
    ] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Import per-embassy lists: every bad row reported, nothing changed unless --skip-invalid."""
    settings = settings_for(ctx, config)
    # A bar only for a person watching: never into a pipe, a log file or a --json reader.
    watched = not json_ and sys.stdout.isatty() and sys.stderr.isatty()
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=err, disable=not watched) as bar:
            task = bar.add_task("import", total=None)

            def advance(done: int, total: int) -> None:
                # Short lists are stored before a bar could say anything useful.
                if total >= PROGRESS_FROM_ROWS:
                    bar.update(task, completed=done, total=total)

            done = service.import_lists(
                settings, paths, actor=Actor.cli(), scope=EVERYWHERE, dry_run=dry_run,
                skip_invalid=skip_invalid, require_confirmation=require_confirmation,
                progress=advance,
            )  # fmt: skip
    except BadRowsError as exc:
        for error in exc.errors:
            note(f"{error}")
        raise
    for file, encoding in done.encodings.items():
        note(f"read {file} as {encoding} (not UTF-8): check its names with `subscribers list`")
    for error in done.skipped:
        note(f"skipped {error}")
    report, sent = done.report, _mail_failures(done.mail)
    for email, status_kept in report.refused:
        note(f"not re-activated: {email} is {status_kept}")
    for email in report.suppressed:
        note(f"not imported: {email} was erased on request (suppressed)")
    summary = {
        "added": report.added, "updated": report.updated, "unchanged": report.unchanged,
        "refused": [{"email": e, "status": s} for e, s in report.refused],
        "suppressed": report.suppressed, "confirmations_sent": sent, "dry_run": dry_run,
    }  # fmt: skip
    if json_:
        print_json(summary)
        return
    prefix = "would import" if dry_run else "imported"
    note(
        f"{prefix}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
        f"{len(report.refused)} refused, {len(report.suppressed)} suppressed"
        + (f"; {sent} confirmation requests sent" if sent else "")
    )


@subscribers_app.command("export")
def subscribers_export(
    ctx: typer.Context,
    embassy: EmbassyFilter = None,
    sector: SectorFilter = None,
    status: StatusFilter = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="One CSV file (with an embassy column).")
    ] = None,
    by_embassy: Annotated[
        Path | None, typer.Option("--by-embassy", help="Folder for one <embassy-code>.csv each.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Export lists that `subscribers import` reads back; formula cells are neutralised."""
    if output and by_embassy:
        raise typer.BadParameter("give -o FILE or --by-embassy DIR, not both", param_hint="-o")
    settings = settings_for(ctx, config)
    rows = service.export_lists(
        settings, scope=EVERYWHERE, embassy=embassy, sector=sector, status=status
    )
    if by_embassy:
        files = export.export_by_embassy(rows)
        output_folder(by_embassy)
        for name, text in files.items():
            _write_csv(by_embassy / name, text)
        note(f"wrote {len(rows)} subscribers to {len(files)} files in {by_embassy}")
    elif output:
        _write_csv(output, export.export_text(rows))
        note(f"wrote {len(rows)} subscribers to {output}")
    else:
        typer.echo(export.export_text(rows), nl=False)


def _write_csv(path: Path, text: str) -> None:
    # The BOM tells Excel the file is UTF-8; without it Chinese names open as mojibake.
    write_output(path, text, encoding="utf-8-sig")


@subscribers_app.command("list")
def subscribers_list(
    ctx: typer.Context,
    embassy: EmbassyFilter = None,
    sector: SectorFilter = None,
    status: StatusFilter = None,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Subscribers, filtered by embassy, sector or status (erased rows are not listed)."""
    settings = settings_for(ctx, config)
    views = service.list_subscribers(
        settings, scope=EVERYWHERE, embassy=embassy, sector=sector, status=status
    )
    if json_:
        print_json([{**asdict(v), "sectors": list(v.sectors)} for v in views])
        return
    table = Table("email", "name", "embassy", "sectors", "lang", "status")
    for v in views:
        table.add_row(v.email, v.name, v.embassy, ", ".join(v.sectors), v.language, v.status)
    out.print(table)
    note(f"{len(views)} subscribers")


@subscribers_app.command("add")
def subscribers_add(
    ctx: typer.Context,
    email: str,
    embassy: Annotated[str, typer.Option("--embassy", help="Embassy code.")],
    name: Annotated[str, typer.Option("--name")] = "",
    title: Annotated[str, typer.Option("--title")] = "",
    sectors: Annotated[str, typer.Option("--sectors", help="Comma-separated sector codes.")] = "",
    language: Annotated[str, typer.Option("--language", help="zh or en.")] = "zh",
    status: Annotated[SubscriberStatus, typer.Option("--status")] = SubscriberStatus.ACTIVE,
    config: ConfigOption = None,
) -> None:
    """Add one subscriber (active unless --status pending)."""
    settings = settings_for(ctx, config)
    added = service.add_subscriber(
        settings, email, embassy=embassy, actor=Actor.cli(), scope=EVERYWHERE, name=name,
        title=title, sectors=parse_sector_codes(sectors), language=language, status=status,
    )  # fmt: skip
    note(f"added {added.email} ({embassy}, {status.value})")


def _history(details: service.SubscriberDetails) -> list[dict[str, str]]:
    return [
        {"at": e.at.isoformat(), "action": e.action, "old_status": e.old_status,
         "new_status": e.new_status, "actor": e.actor, "via": e.via, "detail": e.detail}
        for e in details.history
    ]  # fmt: skip


def _details(d: service.SubscriberDetails) -> dict[str, object]:
    return {
        "id": d.id, "email": d.email, "name": d.name, "title": d.title, "embassy": d.embassy,
        "sectors": list(d.sectors), "language": d.language, "status": d.status,
        "consent_source": d.consent_source, "created_at": d.created_at.isoformat(),
        "confirmed_at": d.confirmed_at.isoformat() if d.confirmed_at else None,
        "status_changed_at": d.status_changed_at.isoformat(),
    }  # fmt: skip


def _print_history(events: list[dict[str, str]]) -> None:
    table = Table("at", "action", "status", "actor", "via", "detail")
    for e in events:
        status = f"{e['old_status']} -> {e['new_status']}" if e["old_status"] else e["new_status"]
        table.add_row(e["at"][:19], e["action"], status, e["actor"], e["via"], e["detail"])
    out.print(table)


@subscribers_app.command("show")
def subscribers_show(
    ctx: typer.Context, email: str, config: ConfigOption = None, json_: JsonOption = False
) -> None:
    """One subscriber, with every recorded change (who, when, through what)."""
    settings = settings_for(ctx, config)
    found = service.show_subscriber(settings, email, scope=EVERYWHERE)
    details, events = _details(found), _history(found)
    if json_:
        print_json({**details, "history": events})
        return
    for key, value in details.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        out.print(f"{key:>17}: {'' if shown is None else shown}")
    _print_history(events)


@subscribers_app.command("remove")
def subscribers_remove(
    ctx: typer.Context,
    email: str,
    suppress: Annotated[
        bool,
        typer.Option(
            "--suppress",
            help="Also for an address not on the list: keep it from ever being added.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    config: ConfigOption = None,
) -> None:
    """Erase a person's data; only a keyed hash of the address stays, so no import re-adds it."""
    settings = settings_for(ctx, config)
    # Ask only a person at a terminal; scripts (no terminal) have said what they mean.
    if not yes and sys.stdin.isatty():
        typer.confirm(f"Erase {email} for good?", abort=True)
    try:
        erasure = service.erase_subscriber(
            settings, email, actor=Actor.cli(), scope=EVERYWHERE, suppress=suppress
        )
    except NotListedError as exc:
        raise NotFoundError(
            exc.kind, exc.key,
            f"nothing erased; to keep it from ever being added or imported, run "
            f"`newsletter subscribers remove {exc.key} --suppress`",
        ) from None  # fmt: skip
    if erasure.subscriber_id is not None:
        note(
            f"erased {erasure.address} (subscriber #{erasure.subscriber_id}): personal data "
            "removed, address kept only as a keyed hash on the suppression list"
        )
    elif erasure.newly_suppressed:
        note(
            f"{erasure.address} was not on the list; suppressed so no import adds it "
            f"(undo: `newsletter subscribers unsuppress {erasure.address} --reason ...`)"
        )
    else:
        note(f"{erasure.address} is already erased and on the suppression list; nothing changed")


@subscribers_app.command("unsuppress")
def subscribers_unsuppress(
    ctx: typer.Context,
    email: str,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (a typo, the person asked to come back).")
    ] = "",
    config: ConfigOption = None,
) -> None:
    """Take an address off the suppression list, so it can be added or imported again."""
    settings = settings_for(ctx, config)
    done = service.unsuppress(settings, email, reason=reason, actor=Actor.cli(), scope=EVERYWHERE)
    note(
        f"{done.address} is off the suppression list (suppressed {done.suppressed_at:%Y-%m-%d}: "
        f"{done.reason or 'no reason kept'}); it can be added again with "
        f"`newsletter subscribers add {done.address} --embassy CODE`"
    )


@subscribers_app.command("handover")
def subscribers_handover(
    ctx: typer.Context,
    old_email: str,
    new_email: str,
    name: Annotated[str, typer.Option("--name", help="The successor's name.")] = "",
    no_mail: Annotated[
        bool, typer.Option("--no-mail", help="Do not send the successor a link to confirm.")
    ] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Give a post's sectors and language to the successor (pending) and retire the old address."""
    settings = settings_for(ctx, config)
    done = service.hand_over(
        settings, old_email, new_email, actor=Actor.cli(), scope=EVERYWHERE, name=name,
        mail=not no_mail,
    )  # fmt: skip
    sent = _mail_failures([done.mail] if done.mail else [])
    summary = {
        "old": done.old.email, "old_status": done.old.status, "new": done.new.email,
        "new_status": done.new.status, "embassy": done.new.embassy, "title": done.new.title,
        "sectors": list(done.new.sectors), "language": done.new.language,
        "confirmation_sent": bool(sent),
    }  # fmt: skip
    if json_:
        print_json(summary)
        return
    note(
        f"handed over {done.new.title or 'the post'} ({done.new.embassy}) from "
        f"{done.old.email} to {done.new.email} (pending their confirmation"
        + ("; link sent)" if sent else "; no link sent)")
    )


@subscribers_app.command("edit")
def subscribers_edit(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The subscriber's address.")],
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="each (every issue), weekly or monthly (one digest on --weekday), or paused "
            "(nothing until --until).",
        ),
    ],
    weekday: Annotated[
        str | None, typer.Option("--weekday", help="MON..SUN for weekly or monthly.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="YYYY-MM-DD, the day a pause ends.")
    ] = None,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Set how often a subscriber receives, or pause them for leave (audited)."""
    # Imported here: the delivery modes belong to scheduling, this module to the lists.
    from newsletter.services import delivery_modes

    change = delivery_modes.set_mode(
        settings_for(ctx, config), email, mode, weekday=weekday, until=until, actor=Actor.cli()
    )
    if json_:
        print_json(change.as_dict())
        return
    note(f"{change.email}: {change.described} (was {change.before})")


@subscribers_app.command("pending")
def subscribers_pending(
    ctx: typer.Context,
    embassy: EmbassyFilter = None,
    older_than: Annotated[
        int | None,
        typer.Option("--older-than", metavar="DAYS", help="Only those waiting DAYS or more."),
    ] = None,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Confirmed web sign-ups awaiting approval ([web] approval = "mission"), longest first."""
    waiting = service.pending_approvals(
        settings_for(ctx, config), scope=EVERYWHERE, embassy=embassy, older_than_days=older_than
    )
    if json_:
        print_json([{**asdict(a), "sectors": list(a.sectors)} for a in waiting])
        return
    table = Table("email", "name", "embassy", "lang", "waiting since", "days")
    for a in waiting:
        table.add_row(
            a.email, a.name, a.embassy, a.language, f"{a.waiting_since:%Y-%m-%d %H:%M}",
            str(a.days_waiting),
        )  # fmt: skip
    out.print(table)
    note(
        f"{len(waiting)} awaiting approval"
        + (f" for {older_than} days or more" if older_than is not None else "")
        + ("; `newsletter subscribers approve EMAIL` lets one in" if waiting else "")
    )


@subscribers_app.command("approve")
def subscribers_approve(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The address awaiting approval.")],
    config: ConfigOption = None,
) -> None:
    """Let a confirmed sign-up in: the next issues reach them (audited)."""
    details, changed = service.approve_signup(
        settings_for(ctx, config), email, actor=Actor.cli(), scope=EVERYWHERE
    )
    note(
        f"{details.email} ({details.embassy}) "
        + ("approved" if changed else "was approved already")
    )


@subscribers_app.command("reject")
def subscribers_reject(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The address awaiting approval.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit trail.")] = "",
    config: ConfigOption = None,
) -> None:
    """Refuse a confirmed sign-up: it ends unsubscribed, the reason audited; no mail is sent."""
    details = service.reject_signup(
        settings_for(ctx, config), email, actor=Actor.cli(), scope=EVERYWHERE, reason=reason
    )
    note(f"{details.email} ({details.embassy}) rejected; they receive nothing")
