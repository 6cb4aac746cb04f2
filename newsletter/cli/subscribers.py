"""`subscribers import|list|add`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlmodel import Session

from newsletter import directory
from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    err,
    group,
    open_session,
    out,
    print_json,
    settings_for,
)
from newsletter.errors import ListImportError
from newsletter.models import SubscriberStatus
from newsletter.subscriptions import store
from newsletter.subscriptions.lists import (
    BadRowsError,
    ListRow,
    RowError,
    normalise_email,
    parse_list,
)

subscribers_app = group("subscribers", "Manage subscriber lists.")


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


def read_lists(session: Session, paths: list[Path], *, skip_invalid: bool) -> list[ListRow]:
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
        got, bad = parse_list(
            text, source=str(file), embassy=embassy, embassies=embassies, sectors=sectors
        )
        rows.extend(got)
        errors.extend(bad)
    first: dict[str, ListRow] = {}
    for row in rows:
        if row.email in first:
            other = first[row.email]
            errors.append(
                RowError(
                    row.source,
                    row.line,
                    "email",
                    f"{row.email} also in {other.source}:{other.line}",
                )
            )
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
        bool, typer.Option("--require-confirmation", help="New subscribers start pending.")
    ] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Import per-embassy lists; every bad row is reported and nothing changes unless --skip-invalid."""
    settings = settings_for(ctx, config)
    with open_session(settings) as session:
        rows = read_lists(session, paths, skip_invalid=skip_invalid)
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
        print_json(summary)
    else:
        prefix = "would import" if dry_run else "imported"
        err.print(
            f"{prefix}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
            f"{len(report.refused)} refused"
        )


@subscribers_app.command("list")
def subscribers_list(
    ctx: typer.Context,
    embassy: Annotated[str | None, typer.Option("--embassy", help="Embassy code.")] = None,
    sector: Annotated[str | None, typer.Option("--sector", help="Sector code.")] = None,
    status: Annotated[SubscriberStatus | None, typer.Option("--status")] = None,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Subscribers, filtered by embassy, sector or status."""
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
    settings = settings_for(ctx, config)
    try:
        address = normalise_email(email)
    except ValueError as exc:
        raise ListImportError(f"{email!r} is not a valid address: {exc}") from None
    if language not in ("zh", "en"):
        raise ListImportError(f"--language {language!r}: use zh or en")
    codes = tuple(
        dict.fromkeys(c.strip() for c in sectors.replace(";", ",").split(",") if c.strip())
    )
    row = ListRow(address, name.strip(), title.strip(), embassy, codes, language, "cli", 0)
    with open_session(settings) as session:
        store.add(session, row, status=status, actor="staff", via="cli")
    err.print(f"added {address} ({embassy}, {status.value})")
