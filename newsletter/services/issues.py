"""Importing an issue: YAML as is, or the journal's plain text converted first."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from newsletter import directory
from newsletter.actors import Actor
from newsletter.config import Settings
from newsletter.content import issue_intake
from newsletter.db import Engine
from newsletter.issues import save_issue
from newsletter.services.units import unit_of_work

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
    log.info("%s (via %s) imported issue %s", actor.label, actor.via, record.slug)
    return ImportedIssue(record.slug, len(issue.items), created, tuple(str(w) for w in warnings))
