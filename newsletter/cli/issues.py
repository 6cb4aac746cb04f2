"""`issue import|convert|list|show`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from newsletter import directory
from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    err,
    group,
    open_session,
    out,
    print_json,
    read_bytes,
    settings_for,
)
from newsletter.cli.output import check_output, write_output
from newsletter.content import issue_intake
from newsletter.issues import get_issue, list_issues
from newsletter.services.actors import Actor
from newsletter.services.issues import import_issue

issue_app = group("issue", "Import, convert, list and show issues.")


@issue_app.command("import")
def issue_import(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="An issue file (.yaml) or the journal's plain text.")
    ],
    config: ConfigOption = None,
) -> None:
    """Import an issue: YAML as is, plain text converted first (warnings printed)."""
    settings = settings_for(ctx, config)
    imported = import_issue(settings, read_bytes(file), source=str(file), actor=Actor.cli())
    for warning in imported.warnings:
        err.print(f"warning: {warning}", markup=False)
    verb = "imported" if imported.created else "replaced"
    err.print(f"{verb} issue {imported.slug}: {imported.items} items")


@issue_app.command("convert")
def issue_convert(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="The journal's plain text, as exported from the PDF.")
    ],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="YAML file to write (-: stdout).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Convert the journal's plain text into an issue file for review (stdout or -o FILE)."""
    settings = settings_for(ctx, config)
    check_output(output)
    data = read_bytes(file)
    with open_session(settings) as session:
        taxonomy = tuple(directory.sectors(session).values())
    conversion = issue_intake.convert_text(data, source=str(file), taxonomy=taxonomy)
    for warning in conversion.warnings:
        err.print(f"warning: {file}:{warning.line}: {warning.message}", markup=False)
    where = write_output(output, conversion.yaml)
    if where != "stdout":
        err.print(
            f"wrote {where}: {len(conversion.issue.items)} items, "
            f"{len(conversion.warnings)} warnings",
            markup=False,
        )


@issue_app.command("list")
def issue_list(ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False) -> None:
    """Imported issues."""
    settings = settings_for(ctx, config)
    with open_session(settings) as session:
        rows: list[dict[str, Any]] = [
            {"slug": r.slug, "publication": r.publication, "year": r.year, "number": r.number,
             "date": r.date.isoformat() if r.date else None, "imported_at": r.imported_at.isoformat()}
            for r in list_issues(session)
        ]  # fmt: skip
    if json_:
        print_json(rows)
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
    settings = settings_for(ctx, config)
    with open_session(settings) as session:
        stored = get_issue(session, slug)
    issue = stored.issue
    if json_:
        print_json(
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
