"""`subscribers import|export|list|add|show|remove|handover`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlmodel import Session

from newsletter import addresses, directory, runtime
from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    group,
    open_session,
    out,
    print_json,
    settings_for,
)
from newsletter.config import Settings
from newsletter.errors import ConfigError, ListImportError
from newsletter.models import Subscriber, SubscriberStatus, utcnow
from newsletter.render.environment import make_environment
from newsletter.subscriptions import export, store
from newsletter.subscriptions.erasure import erase
from newsletter.subscriptions.handover import handover
from newsletter.subscriptions.lifecycle import Actor
from newsletter.subscriptions.lists import (
    BadRowsError,
    ListRow,
    RowError,
    check_text,
    parse_list,
    parse_sector_codes,
)
from newsletter.subscriptions.mail import deliver, subscription_message
from newsletter.subscriptions.signup import MailKind, MailRequest

subscribers_app = group("subscribers", "Manage subscriber lists.")
STAFF = Actor("staff", "cli")


def note(text: str) -> None:
    """One line on stderr, unwrapped: staff grep these for file:line and addresses."""
    typer.echo(text, err=True)


EmbassyFilter = Annotated[str | None, typer.Option("--embassy", help="Embassy code.")]
SectorFilter = Annotated[str | None, typer.Option("--sector", help="Sector code.")]
StatusFilter = Annotated[SubscriberStatus | None, typer.Option("--status")]


def _list_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(path.glob("*.csv")))
        elif path.is_file():
            files.append(path)
        else:
            raise ListImportError(f"{path} not found")
    if not files:
        raise ListImportError(f"no .csv files in {', '.join(map(str, paths))}")
    return files


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ListImportError(f"{file}: not UTF-8 text; save the list as CSV UTF-8") from None
    except OSError as exc:
        raise ListImportError(f"cannot read {file}: {exc.strerror}") from None


def _cross_file_duplicates(rows: list[ListRow], errors: list[RowError]) -> list[ListRow]:
    first: dict[str, ListRow] = {}
    for row in rows:
        if row.email in first:
            other = first[row.email]
            reason = f"{row.email} also in {other.source}:{other.line}"
            errors.append(RowError(row.source, row.line, "email", reason))
        else:
            first[row.email] = row
    return list(first.values())


def read_lists(session: Session, paths: list[Path], *, skip_invalid: bool) -> list[ListRow]:
    """Parse every list; report every bad row, and stop unless told to skip them."""
    embassies = set(directory.embassies(session))
    sectors = set(directory.sectors(session))
    rows: list[ListRow] = []
    errors: list[RowError] = []
    for file in _list_files(paths):
        embassy = file.stem if file.stem in embassies else None
        got, bad = parse_list(
            _read_text(file), source=str(file), embassy=embassy, embassies=embassies,
            sectors=sectors,
        )  # fmt: skip
        rows.extend(got)
        errors.extend(bad)
    unique = _cross_file_duplicates(rows, errors)
    if errors and not skip_invalid:
        for error in errors:
            note(f"{error}")
        raise BadRowsError(errors)
    for error in errors:
        note(f"skipped {error}")
    return unique


def send_subscription_mail(settings: Settings, requests: Sequence[MailRequest]) -> int:
    """Send confirmation mail now; the number accepted. Failures are reported on stderr."""
    if not requests:
        return 0
    env = make_environment(runtime.templates_dir(settings))
    dkim = runtime.load_dkim(settings)
    now = utcnow()
    messages = [subscription_message(settings, env, r, now=now, dkim=dkim) for r in requests]
    replies = asyncio.run(deliver(runtime.make_transport(settings), messages))
    for request, reply in zip(requests, replies, strict=True):
        if not 200 <= reply.code < 300:
            note(f"confirmation to {request.address} not sent: {reply}")
    return sum(1 for reply in replies if 200 <= reply.code < 300)


def _confirmations(subscribers: Sequence[Subscriber]) -> list[MailRequest]:
    return [
        MailRequest.about(MailKind.INVITE, s)
        for s in subscribers
        if s.status == SubscriberStatus.PENDING
    ]


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
    with open_session(settings) as session:
        rows = read_lists(session, paths, skip_invalid=skip_invalid)
        status = SubscriberStatus.PENDING if require_confirmation else SubscriberStatus.ACTIVE
        report = store.import_rows(
            session, rows, status=status, commit=not dry_run, secret=settings.secret
        )
    sent = 0 if dry_run else send_subscription_mail(settings, _confirmations(report.created))
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
    with open_session(settings) as session:
        rows = export.export_rows(
            session, embassy=embassy, sector=sector, status=status.value if status else None
        )
    if by_embassy:
        files = export.export_by_embassy(rows)
        by_embassy.mkdir(parents=True, exist_ok=True)
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
    try:
        path.write_text(text, encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


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
    with open_session(settings) as session:
        views = store.list_views(
            session, embassy=embassy, sector=sector, status=status.value if status else None
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
    address = addresses.normalise(email)  # AddressError: one line naming the address and the fault
    if language not in ("zh", "en"):
        raise ListImportError(f"--language {language!r}: use zh or en")
    for option, value in (("--name", name), ("--title", title)):
        problem = check_text(value.strip(), option.lstrip("-"))
        if problem:
            raise ListImportError(f"{option}: {problem}")
    row = ListRow(
        address, name.strip(), title.strip(), embassy, parse_sector_codes(sectors), language,
        "cli", 0,
    )  # fmt: skip
    with open_session(settings) as session:
        store.add(session, row, status=status, actor="staff", via="cli", secret=settings.secret)
    note(f"added {address} ({embassy}, {status.value})")


def _history(session: Session, subscriber_id: int) -> list[dict[str, str]]:
    return [
        {"at": e.at.isoformat(), "action": e.action, "old_status": e.old_status,
         "new_status": e.new_status, "actor": e.actor, "via": e.via, "detail": e.detail}
        for e in store.history(session, subscriber_id)
    ]  # fmt: skip


def _details(session: Session, subscriber: Subscriber) -> dict[str, object]:
    assert subscriber.id is not None
    return {
        "id": subscriber.id, "email": subscriber.email, "name": subscriber.name,
        "title": subscriber.title, "embassy": subscriber.embassy_code,
        "sectors": list(store.sectors_of(session, [subscriber.id]).get(subscriber.id, ())),
        "language": subscriber.language, "status": str(subscriber.status),
        "consent_source": subscriber.consent_source,
        "created_at": subscriber.created_at.isoformat(),
        "confirmed_at": subscriber.confirmed_at.isoformat() if subscriber.confirmed_at else None,
        "status_changed_at": subscriber.status_changed_at.isoformat(),
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
    with open_session(settings) as session:
        subscriber = store.find(session, email)
        details = _details(session, subscriber)
        events = _history(session, subscriber.id or 0)
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
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    config: ConfigOption = None,
) -> None:
    """Erase a person's data; only a keyed hash of the address stays, so no import re-adds it."""
    settings = settings_for(ctx, config)
    # Ask only a person at a terminal; scripts (no terminal) have said what they mean.
    if not yes and sys.stdin.isatty():
        typer.confirm(f"Erase {email} for good?", abort=True)
    with open_session(settings) as session:
        erasure = erase(session, settings.secret, email, actor=STAFF)
    if erasure.subscriber_id is None:
        note(f"{erasure.address} was not on the list; suppressed so no import adds it")
    else:
        note(
            f"erased {erasure.address} (subscriber #{erasure.subscriber_id}): personal data "
            "removed, address kept only as a keyed hash on the suppression list"
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
    with open_session(settings) as session:
        done = handover(
            session, settings.secret, old_email=old_email, new_email=new_email, name=name,
            actor=STAFF,
        )  # fmt: skip
    sent = 0 if no_mail else send_subscription_mail(settings, _confirmations([done.new]))
    summary = {
        "old": done.old.email, "old_status": str(done.old.status), "new": done.new.email,
        "new_status": str(done.new.status), "embassy": done.new.embassy_code,
        "title": done.new.title, "sectors": list(done.sectors), "language": done.new.language,
        "confirmation_sent": bool(sent),
    }  # fmt: skip
    if json_:
        print_json(summary)
        return
    note(
        f"handed over {done.new.title or 'the post'} ({done.new.embassy_code}) from "
        f"{done.old.email} to {done.new.email} (pending their confirmation"
        + ("; link sent)" if sent else "; no link sent)")
    )
