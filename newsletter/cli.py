"""The `newsletter` command line: parse, call the core, print. Exit 0 ok, 1 user error, 2 usage."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlmodel import Session, select

from newsletter import directory, runtime
from newsletter.config import Settings, config_path, load_settings, sample_config
from newsletter.content import issue_intake
from newsletter.db import make_engine, upgrade
from newsletter.delivery.campaigns import (
    enqueue_active,
    get_campaign,
    list_summaries,
    open_campaign,
    summarise,
)
from newsletter.delivery.compose import RecipientData, personalised, tailored
from newsletter.delivery.engine import SendEngine, SendReport
from newsletter.errors import ConfigError, ListImportError, NewsletterError
from newsletter.issues import get_issue, list_issues, save_issue
from newsletter.models import Subscriber, SubscriberStatus
from newsletter.subscriptions import store
from newsletter.subscriptions.lists import BadRowsError, ListRow, RowError, normalise_email, parse_list

err = Console(stderr=True)
out = Console(highlight=False)


class _Group(typer.core.TyperGroup):
    """Turns every `NewsletterError` into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Tailored e-journal digests for science-and-technology diplomats.",
)  # fmt: skip
issue_app = typer.Typer(no_args_is_help=True, help="Import, list and show issues.")
subscribers_app = typer.Typer(no_args_is_help=True, help="Manage subscriber lists.")
campaign_app = typer.Typer(no_args_is_help=True, help="Follow and control campaigns.")
embassies_app = typer.Typer(no_args_is_help=True, help="The embassy directory.")
sectors_app = typer.Typer(no_args_is_help=True, help="The sector taxonomy.")
app.add_typer(issue_app, name="issue")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(campaign_app, name="campaign")
app.add_typer(embassies_app, name="embassies")
app.add_typer(sectors_app, name="sectors")

ConfigOption = Annotated[
    Optional[Path],  # noqa: UP045  (typer needs Optional here)
    typer.Option("--config", help="Config file (default ./newsletter.toml or $NEWSLETTER_CONFIG)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


@app.callback()
def _root(ctx: typer.Context, config: ConfigOption = None) -> None:
    ctx.obj = config


def _settings(ctx: typer.Context, config: Path | None = None) -> Settings:
    chosen = config or ctx.find_root().obj
    return load_settings(chosen)


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    engine = runtime.open_database(settings)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------- init, demo


def _initialise(settings: Settings) -> tuple[int, int]:
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    reference = directory.read_reference(runtime.data_dir(settings))
    with Session(engine) as session:
        directory.sync_reference(session, reference)
    engine.dispose()
    return len(reference.sectors), len(reference.embassies)


@app.command()
def init(
    ctx: typer.Context,
    dir: Annotated[Optional[Path], typer.Option("--dir", help="Folder of the instance.")] = None,  # noqa: UP045
    config: ConfigOption = None,
) -> None:
    """Create newsletter.toml (if missing), the database at the latest schema, and reference data."""
    target = (dir / "newsletter.toml") if dir else config_path(config or ctx.find_root().obj)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(sample_config(), encoding="utf-8")
        err.print(f"wrote {target}")
    settings = load_settings(target)
    sectors, embassies = _initialise(settings)
    err.print(f"database ready: {settings.resolved_database_url} ({sectors} sectors, {embassies} missions)")


@app.command()
def demo(
    dir: Annotated[Path, typer.Option("--dir", help="Folder for the demo instance.")] = Path("demo"),
    smtp: Annotated[Optional[str], typer.Option("--smtp", help="HOST:PORT of an SMTP server.")] = None,  # noqa: UP045
    json_: JsonOption = False,
) -> None:
    """A fresh instance in DIR: sample data and issue loaded, every digest sent, a summary."""
    host, port = _host_port(smtp) if smtp else ("", 0)
    config = dir / "newsletter.toml"
    for leftover in (config, *dir.glob("newsletter.db*")):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(dir / "outbox", ignore_errors=True)
    dir.mkdir(parents=True, exist_ok=True)
    config.write_text(sample_config(), encoding="utf-8")
    settings = load_settings(config)
    if smtp:
        settings.transport = "smtp"
        settings.smtp.host, settings.smtp.port = host, port
    _initialise(settings)
    with _session(settings) as session:
        rows = _read_lists(session, [runtime.data_dir(settings) / "lists"], skip_invalid=False)
        store.import_rows(session, rows, actor="demo", via="import")
        sample = issue_intake.sample_issue_path()
        issue, text, _ = issue_intake.read_issue_file(
            sample.read_bytes(), source=str(sample), taxonomy=tuple(directory.sectors(session).values())
        )
        save_issue(session, issue, text)
    report = _send(settings, issue.slug, quiet=json_)
    outbox = settings.path(settings.outbox).resolve()
    if json_:
        _print_json({**report.as_dict(), "subscribers": len(rows), "outbox": str(outbox)})
        return
    out.print(
        f"demo: {len(rows)} subscribers, {report.profiles} profiles, {report.sent} messages, "
        f"{report.bytes / 1024:.0f} KiB in {report.seconds:.2f} s"
    )
    if settings.transport == "file":
        previews = sorted(outbox.glob("*.html"))
        out.print(f"outbox: {outbox} ({len(previews)} .eml + .html previews)")
        if previews:
            out.print(f"open a preview: {previews[0]}")
    else:
        out.print(f"sent through {host}:{port}")


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--smtp {value!r}: give HOST:PORT, such as 127.0.0.1:2525")
    return host, int(port)


# ---------------------------------------------------------------------------------- issues


@issue_app.command("import")
def issue_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="An issue file (.yaml) or the journal's plain text.")],
    config: ConfigOption = None,
) -> None:
    """Import an issue: YAML as is, plain text converted first (warnings printed)."""
    settings = _settings(ctx, config)
    data = _read_bytes(file)
    with _session(settings) as session:
        taxonomy = tuple(directory.sectors(session).values())
        issue, text, warnings = issue_intake.read_issue_file(data, source=str(file), taxonomy=taxonomy)
        for warning in warnings:
            err.print(f"warning: {warning}", markup=False)
        record, created = save_issue(session, issue, text)
    verb = "imported" if created else "replaced"
    err.print(f"{verb} issue {record.slug}: {len(issue.items)} items")


@issue_app.command("convert")
def issue_convert(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The journal's plain text, as exported from the PDF.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="YAML file to write.")] = None,  # noqa: UP045
    config: ConfigOption = None,
) -> None:
    """Convert the journal's plain text into an issue file for review (stdout or -o FILE)."""
    settings = _settings(ctx, config)
    data = _read_bytes(file)
    with _session(settings) as session:
        taxonomy = tuple(directory.sectors(session).values())
    conversion = issue_intake.convert_text(data, source=str(file), taxonomy=taxonomy)
    for warning in conversion.warnings:
        err.print(f"warning: {file}:{warning.line}: {warning.message}", markup=False)
    if output:
        output.write_text(conversion.yaml, encoding="utf-8")
        err.print(f"wrote {output}: {len(conversion.issue.items)} items, {len(conversion.warnings)} warnings")
    else:
        typer.echo(conversion.yaml, nl=False)


def _read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None


@issue_app.command("list")
def issue_list(ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False) -> None:
    """Imported issues."""
    settings = _settings(ctx, config)
    with _session(settings) as session:
        rows = [
            {"slug": r.slug, "publication": r.publication, "year": r.year, "number": r.number,
             "date": r.date.isoformat() if r.date else None, "imported_at": r.imported_at.isoformat()}
            for r in list_issues(session)
        ]  # fmt: skip
    if json_:
        _print_json(rows)
        return
    table = Table("slug", "publication", "date", "imported")
    for row in rows:
        table.add_row(row["slug"], row["publication"], row["date"] or "", row["imported_at"][:16])
    out.print(table)


@issue_app.command("show")
def issue_show(
    ctx: typer.Context, slug: str, config: ConfigOption = None, json_: JsonOption = False
) -> None:
    """One issue's items, sections and sectors."""
    settings = _settings(ctx, config)
    with _session(settings) as session:
        stored = get_issue(session, slug)
    issue = stored.issue
    if json_:
        _print_json(
            {
                "slug": issue.slug, "publication": issue.publication, "year": issue.year,
                "number": issue.number, "date": issue.date.isoformat() if issue.date else None,
                "items": [
                    {"id": i.id, "section": i.section, "title": i.title, "source": i.source,
                     "sectors": list(i.sectors), "regions": list(i.regions), "always": i.always}
                    for i in issue.items
                ],
            }
        )  # fmt: skip
        return
    out.print(f"{issue.publication} {issue.year}年第{issue.number}期 ({issue.slug})", markup=False)
    table = Table("id", "section", "title", "sectors")
    for i in issue.items:
        table.add_row(i.id, i.section, i.title, ", ".join(i.sectors))
    out.print(table)


# ---------------------------------------------------------------------------------- subscribers


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


def _read_lists(session: Session, paths: list[Path], *, skip_invalid: bool) -> list[ListRow]:
    embassies = set(directory.embassies(session))
    sectors = set(directory.sectors(session))
    rows: list[ListRow] = []
    errors: list[RowError] = []
    for file in _list_files(paths):
        try:
            text = file.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise ListImportError(f"{file}: not UTF-8 text; save the list as CSV UTF-8") from None
        embassy = file.stem if file.stem in embassies else None
        got, bad = parse_list(text, source=str(file), embassy=embassy, embassies=embassies, sectors=sectors)
        rows.extend(got)
        errors.extend(bad)
    first: dict[str, ListRow] = {}
    for row in rows:
        if row.email in first:
            other = first[row.email]
            errors.append(RowError(row.source, row.line, "email", f"{row.email} also in {other.source}:{other.line}"))
        else:
            first[row.email] = row
    if errors and not skip_invalid:
        for error in errors:
            err.print(f"{error}", markup=False)
        raise BadRowsError(errors)
    for error in errors:
        err.print(f"skipped {error}", markup=False)
    return list(first.values())


@subscribers_app.command("import")
def subscribers_import(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="CSV files or folders of <embassy-code>.csv.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and report; change nothing.")] = False,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Import good rows, skip bad ones.")] = False,
    require_confirmation: Annotated[
        bool, typer.Option("--require-confirmation", help="New subscribers start pending.")
    ] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Import per-embassy lists; every bad row is reported and nothing changes unless --skip-invalid."""
    settings = _settings(ctx, config)
    with _session(settings) as session:
        rows = _read_lists(session, paths, skip_invalid=skip_invalid)
        status = SubscriberStatus.PENDING if require_confirmation else SubscriberStatus.ACTIVE
        if dry_run:
            report = store.import_rows(session, rows, status=status, commit=False)
        else:
            report = store.import_rows(session, rows, status=status)
    summary = {
        "added": report.added, "updated": report.updated, "unchanged": report.unchanged,
        "refused": [{"email": e, "status": s} for e, s in report.refused], "dry_run": dry_run,
    }  # fmt: skip
    for email, status_kept in report.refused:
        err.print(f"not re-activated: {email} is {status_kept}", markup=False)
    if json_:
        _print_json(summary)
    else:
        prefix = "would import" if dry_run else "imported"
        err.print(
            f"{prefix}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
            f"{len(report.refused)} refused"
        )


@subscribers_app.command("list")
def subscribers_list(
    ctx: typer.Context,
    embassy: Annotated[Optional[str], typer.Option("--embassy", help="Embassy code.")] = None,  # noqa: UP045
    sector: Annotated[Optional[str], typer.Option("--sector", help="Sector code.")] = None,  # noqa: UP045
    status: Annotated[Optional[SubscriberStatus], typer.Option("--status")] = None,  # noqa: UP045
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Subscribers, filtered by embassy, sector or status."""
    settings = _settings(ctx, config)
    with _session(settings) as session:
        views = store.list_views(
            session, embassy=embassy, sector=sector, status=status.value if status else None
        )
    if json_:
        _print_json([{**asdict(v), "sectors": list(v.sectors)} for v in views])
        return
    table = Table("email", "name", "embassy", "sectors", "lang", "status")
    for v in views:
        table.add_row(v.email, v.name, v.embassy, ", ".join(v.sectors), v.language, v.status)
    out.print(table)
    err.print(f"{len(views)} subscribers")


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
    settings = _settings(ctx, config)
    try:
        address = normalise_email(email)
    except ValueError as exc:
        raise ListImportError(f"{email!r} is not a valid address: {exc}") from None
    if language not in ("zh", "en"):
        raise ListImportError(f"--language {language!r}: use zh or en")
    codes = tuple(dict.fromkeys(c.strip() for c in sectors.replace(";", ",").split(",") if c.strip()))
    row = ListRow(address, name.strip(), title.strip(), embassy, codes, language, "cli", 0)
    with _session(settings) as session:
        store.add(session, row, status=status, actor="staff", via="cli")
    err.print(f"added {address} ({embassy}, {status.value})")


# ---------------------------------------------------------------------------------- reference


@embassies_app.command("list")
def embassies_list(ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False) -> None:
    """Missions with their time zone and working week."""
    settings = _settings(ctx, config)
    with _session(settings) as session:
        rows = list(directory.embassies(session).values())
    if json_:
        _print_json([{**asdict(e), "regions": list(e.regions), "default_sectors": list(e.default_sectors)} for e in rows])
        return
    table = Table("code", "name", "country", "timezone", "week")
    for e in rows:
        table.add_row(e.code, e.name_zh, e.country, e.timezone, e.working_week)
    out.print(table)


@sectors_app.command("list")
def sectors_list(ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False) -> None:
    """The sector taxonomy."""
    settings = _settings(ctx, config)
    with _session(settings) as session:
        rows = list(directory.sectors(session).values())
    if json_:
        _print_json([{**asdict(s), "keywords": list(s.keywords)} for s in rows])
        return
    table = Table("code", "zh", "en")
    for s in rows:
        table.add_row(s.code, s.zh, s.en)
    out.print(table)


# ---------------------------------------------------------------------------------- digests


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
    settings = _settings(ctx, config)
    with _session(settings) as session:
        context = runtime.issue_context(session, settings, slug)
        recipient = _recipient(session, subscriber)
    selection, _, _ = tailored(context, recipient)
    rows = [
        {"item": d.item_id, "section": d.section, "included": d.included, "reason": d.explain(),
         "reason_code": d.reason.value, "matched": list(d.matched)}
        for d in selection.decisions
    ]  # fmt: skip
    if json_:
        _print_json(rows)
        return
    interests = ", ".join(sorted(selection.interests)) or "none (whole issue)"
    out.print(f"{recipient.email}: interests {interests}", markup=False)
    table = Table("item", "section", "in", "reason")
    for row in rows:
        table.add_row(str(row["item"]), str(row["section"]), "yes" if row["included"] else "no", str(row["reason"]))
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
    settings = _settings(ctx, config)
    with _session(settings) as session:
        context = runtime.issue_context(session, settings, slug)
        recipient = _recipient(session, subscriber)
    _, digest = personalised(context, recipient)
    output.write_text(digest.text if text else digest.html, encoding="utf-8")
    size = len((digest.text if text else digest.html).encode())
    err.print(f"wrote {output}: {digest.subject} ({size:,} bytes)", markup=False)


def _send(
    settings: Settings,
    slug: str,
    *,
    transport: str | None = None,
    outbox: Path | None = None,
    quiet: bool = False,
) -> SendReport:
    engine = runtime.open_database(settings)
    with Session(engine, expire_on_commit=False) as session:
        stored = get_issue(session, slug)
        campaign, _ = open_campaign(session, stored.record)
        enqueue_active(session, campaign)
        context = runtime.issue_context(session, settings, slug)
        total = summarise(session, campaign).total
        pending = total - sum(
            summarise(session, campaign).counts.get(s, 0) for s in ("sent", "failed", "skipped", "unknown")
        )
    assert campaign.id is not None
    sender = runtime.make_transport(settings, transport, outbox)
    columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=quiet or not err.is_terminal) as progress:
        task = progress.add_task("send", total=pending)
        send_engine = SendEngine(
            db=engine, context=context, transport=sender,
            progress=lambda n: progress.advance(task, n),
        )  # fmt: skip
        report = asyncio.run(send_engine.run(campaign.id))
    engine.dispose()
    return report


@app.command()
def send(
    ctx: typer.Context,
    slug: str,
    transport: Annotated[Optional[str], typer.Option("--transport", help="file, smtp or null.")] = None,  # noqa: UP045
    outbox: Annotated[Optional[Path], typer.Option("--outbox", help="Outbox folder (file).")] = None,  # noqa: UP045
    smtp_host: Annotated[Optional[str], typer.Option("--smtp-host")] = None,  # noqa: UP045
    smtp_port: Annotated[Optional[int], typer.Option("--smtp-port")] = None,  # noqa: UP045
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Send an issue to every active subscriber not yet sent it (re-running never re-sends)."""
    settings = _settings(ctx, config)
    if smtp_host:
        settings.smtp.host = smtp_host
    if smtp_port:
        settings.smtp.port = smtp_port
    if transport not in (None, "file", "smtp", "null"):
        raise typer.BadParameter("use file, smtp or null", param_hint="--transport")
    started = time.perf_counter()
    report = _send(settings, slug, transport=transport, outbox=outbox, quiet=json_)
    if json_:
        _print_json(report.as_dict())
        return
    out.print(
        f"campaign {report.campaign} ({report.state}): {report.sent} sent, {report.failed} failed, "
        f"{report.skipped} skipped, {report.retry} to retry, {report.unknown} unknown; "
        f"{report.profiles} profiles rendered in {time.perf_counter() - started:.2f} s"
    )
    if report.reason:
        out.print(f"paused: {report.reason}", markup=False)


# ---------------------------------------------------------------------------------- campaigns


@campaign_app.command("list")
def campaign_list(ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False) -> None:
    """Campaigns with their ledger counts."""
    settings = _settings(ctx, config)
    with _session(settings) as session:
        rows = [s.as_dict() for s in list_summaries(session)]
    if json_:
        _print_json(rows)
        return
    table = Table("id", "issue", "state", "total", "sent", "failed", "retry", "unknown", "skipped")
    for r in rows:
        table.add_row(*(str(r[k]) for k in ("id", "issue", "state", "total", "sent", "failed", "retry", "unknown", "skipped")))
    out.print(table)


@campaign_app.command("status")
def campaign_status(
    ctx: typer.Context, campaign_id: int, config: ConfigOption = None, json_: JsonOption = False
) -> None:
    """One campaign's state and ledger counts."""
    settings = _settings(ctx, config)
    with _session(settings) as session:
        summary = summarise(session, get_campaign(session, campaign_id)).as_dict()
    if json_:
        _print_json(summary)
        return
    for key, value in summary.items():
        out.print(f"{key:>10}: {value}", markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
