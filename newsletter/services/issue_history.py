"""An issue's revisions: each saved text (import or YAML edit), and what changed from the one before."""

from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass

from newsletter import issue_revisions
from newsletter.config import Settings
from newsletter.db import Engine
from newsletter.errors import NotFoundError
from newsletter.models import IssueRevision
from newsletter.services.units import unit_of_work

CONTEXT_LINES = 3


@dataclass(frozen=True)
class Revision:
    number: int
    saved_by: str
    saved_at: dt.datetime
    lines: int


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add", "del", "hunk", "file" or "same": the page's class for the line
    text: str


@dataclass(frozen=True)
class RevisionDiff:
    slug: str
    revision: Revision
    previous: int | None  # the revision it is compared with; None for the first
    lines: tuple[DiffLine, ...]
    newest: int


def _view(row: IssueRevision) -> Revision:
    return Revision(row.number, row.saved_by, row.saved_at, len(row.source_yaml.splitlines()))


def unified(before: str, after: str, old_name: str, new_name: str) -> tuple[DiffLine, ...]:
    """`difflib`'s unified diff, each line tagged for the page (the +/- prefix stays: not colour
    alone)."""
    out: list[DiffLine] = []
    for line in difflib.unified_diff(
        before.splitlines(), after.splitlines(), old_name, new_name, n=CONTEXT_LINES, lineterm=""
    ):
        if line.startswith(("---", "+++")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        out.append(DiffLine(kind, line))
    return tuple(out)


def revisions(settings: Settings, slug: str, *, db: Engine | None = None) -> list[Revision]:
    """Newest first; NotFoundError for an issue never imported."""
    with unit_of_work(settings, db) as session:
        issue = issue_revisions.issue_id(session, slug)
        return [_view(r) for r in issue_revisions.of_issue(session, issue)]


def revision_diff(
    settings: Settings, slug: str, number: int, *, db: Engine | None = None
) -> RevisionDiff:
    """Revision `number` against the one before it (the first against nothing)."""
    with unit_of_work(settings, db) as session:
        issue = issue_revisions.issue_id(session, slug)
        row = issue_revisions.get(session, issue, number)
        if row is None:
            raise NotFoundError(
                "revision", f"{slug} #{number}", f"see /admin/issues/{slug}/revisions"
            )
        before = issue_revisions.get(session, issue, number - 1) if number > 1 else None
        newest = issue_revisions.of_issue(session, issue)[0].number
        lines = unified(
            before.source_yaml if before else "", row.source_yaml,
            f"{slug} #{number - 1}" if before else "/dev/null", f"{slug} #{number}",
        )  # fmt: skip
        return RevisionDiff(slug, _view(row), before.number if before else None, lines, newest)
