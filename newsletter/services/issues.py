"""Importing an issue: YAML as is, or the journal's plain text converted first."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from newsletter import directory, issue_revisions
from newsletter.actors import Actor
from newsletter.config import Settings
from newsletter.content import issue_intake
from newsletter.content.issue_yaml import IssueFileError, load_issue
from newsletter.content.model import Issue
from newsletter.db import Engine
from newsletter.errors import ContentError
from newsletter.issues import (
    get_issue,
    issue_source,
    list_issues,
    published_issues,
    save_issue,
)
from newsletter.models import utcnow
from newsletter.services import audit
from newsletter.services.units import unit_of_work
from newsletter.taxonomy import SectorDef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportedIssue:
    slug: str
    items: int
    created: bool  # False: an unsent issue of that slug was replaced
    warnings: tuple[str, ...]


def import_issue(
    settings: Settings, data: bytes, *, source: str, actor: Actor, db: Engine | None = None
) -> ImportedIssue:
    """Store (or replace, while unsent) the issue in `data`; warnings of the conversion kept."""
    with unit_of_work(settings, db) as session:
        taxonomy = tuple(directory.sectors(session).values())
        issue, text, warnings = issue_intake.read_issue_file(data, source=source, taxonomy=taxonomy)
        record, created = save_issue(session, issue, text)
        assert record.id is not None
        issue_revisions.add(session, record.id, record.source_yaml, actor.label, utcnow())
        # In the chain too: sign-off reads who last changed an issue, by import or by edit.
        audit.record(
            session, actor, "issue.imported", target=f"issue:{record.slug}",
            detail={"items": len(issue.items), "replaced": not created},
        )  # fmt: skip
    log.info("%s (via %s) imported issue %s", actor.label, actor.via, record.slug)
    return ImportedIssue(record.slug, len(issue.items), created, tuple(str(w) for w in warnings))


@dataclass(frozen=True)
class CheckedIssue:
    """What an import would store, not stored: its slug, items and the converter's warnings."""

    slug: str
    items: int
    replaces: bool  # an unsent issue of that slug exists and would be replaced
    warnings: tuple[str, ...]


def check_issue(
    settings: Settings, data: bytes, *, source: str, db: Engine | None = None
) -> CheckedIssue:
    """Read an issue file as `import_issue` would, storing nothing (the import's first look)."""
    with unit_of_work(settings, db, commit=False) as session:
        taxonomy = tuple(directory.sectors(session).values())
        issue, _text, warnings = issue_intake.read_issue_file(
            data, source=source, taxonomy=taxonomy
        )
        existing = {record.slug for record in list_issues(session)}
    return CheckedIssue(issue.slug, len(issue.items), issue.slug in existing, tuple(warnings))


@dataclass(frozen=True)
class IssueSummary:
    slug: str
    publication: str
    title_en: str
    year: int
    number: int
    items: int | None  # None: the stored text no longer loads
    sent: bool  # to at least one subscriber (rehearsals aside): locked
    imported_at: dt.datetime


def list_summaries(settings: Settings, *, db: Engine | None = None) -> list[IssueSummary]:
    """Every stored issue, oldest first, with its number of items and whether it went out."""
    with unit_of_work(settings, db, commit=False) as session:
        sent = {record.slug for record in published_issues(session)}
        out: list[IssueSummary] = []
        for record in list_issues(session):
            try:
                items: int | None = len(load_issue(record.source_yaml).items)
            except ContentError:
                items = None
            out.append(
                IssueSummary(
                    record.slug,
                    record.publication,
                    record.title_en,
                    record.year,
                    record.number,
                    items,
                    record.slug in sent,
                    record.imported_at,
                )  # fmt: skip
            )
        return out


@dataclass(frozen=True)
class IssueReview:
    """One stored issue as staff review it; `issue` None (and `problem` set) when its stored
    text breaks a rule added since its import, so the editor can still fix the YAML."""

    slug: str
    source_yaml: str
    issue: Issue | None
    problem: str
    sent: bool
    sectors: dict[str, SectorDef]


def review_issue(settings: Settings, slug: str, *, db: Engine | None = None) -> IssueReview:
    with unit_of_work(settings, db, commit=False) as session:
        sectors = directory.sectors(session)
        sent = any(record.slug == slug for record in published_issues(session))
        try:
            stored = get_issue(session, slug)
        except ContentError as exc:  # StoredIssueError; NotFoundError is no ContentError
            return IssueReview(slug, issue_source(session, slug), None, str(exc), sent, sectors)
        text = stored.record.source_yaml
        return IssueReview(slug, text, stored.issue, "", sent, sectors)


def save_issue_yaml(
    settings: Settings, slug: str, text: str, *, actor: Actor, db: Engine | None = None
) -> ImportedIssue:
    """Replace a stored, unsent issue with edited YAML; audited.

    The YAML is checked against the taxonomy as an import is; it must keep the issue's slug
    (an edit that renames it would store a second issue); once any row is sent, the sent-lock
    of `save_issue` refuses it, as for a re-import.
    """
    source = f"issue {slug}"
    with unit_of_work(settings, db) as session:
        get_issue(session, slug)  # NotFoundError for a slug that was never imported
        codes = set(directory.sectors(session))
        issue = load_issue(text, source=source, sector_codes=codes)
        if issue.slug != slug:
            raise IssueFileError(
                source, None, "slug",
                f"the edit makes this issue {issue.slug}, not {slug}: keep year, number and "
                "slug as they were, or import the file as a new issue",
            )  # fmt: skip
        record, _created = save_issue(session, issue, text)
        assert record.id is not None
        issue_revisions.add(session, record.id, record.source_yaml, actor.label, utcnow())
        audit.record(
            session, actor, "issue.edited", target=f"issue:{record.slug}",
            detail={"items": len(issue.items)},
        )  # fmt: skip
    log.info("%s (via %s) edited issue %s", actor.label, actor.via, slug)
    return ImportedIssue(slug, len(issue.items), False, ())
