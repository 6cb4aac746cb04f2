"""Storage of an issue's saved texts (imports and YAML edits), numbered 1, 2, ... per issue."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlmodel import col, func, select

from newsletter.db import Session
from newsletter.errors import NotFoundError
from newsletter.models import IssueRecord, IssueRevision


def add(
    session: Session, issue_id: int, text: str, saved_by: str, at: dt.datetime
) -> IssueRevision:
    """The next revision of the issue; two saves at once meet the unique (issue, number)."""
    last = session.exec(
        select(func.max(IssueRevision.number)).where(col(IssueRevision.issue_id) == issue_id)
    ).one()
    row = IssueRevision(
        issue_id=issue_id, number=(last or 0) + 1, source_yaml=text, saved_by=saved_by, saved_at=at
    )
    session.add(row)
    session.flush()
    return row


def of_issue(session: Session, issue_id: int) -> Sequence[IssueRevision]:
    """Newest first."""
    return session.exec(
        select(IssueRevision)
        .where(col(IssueRevision.issue_id) == issue_id)
        .order_by(col(IssueRevision.number).desc())
    ).all()


def get(session: Session, issue_id: int, number: int) -> IssueRevision | None:
    return session.exec(
        select(IssueRevision).where(
            col(IssueRevision.issue_id) == issue_id, col(IssueRevision.number) == number
        )
    ).first()


def issue_id(session: Session, slug: str) -> int:
    found = session.exec(select(IssueRecord.id).where(col(IssueRecord.slug) == slug)).first()
    if found is None:
        raise NotFoundError("issue", slug, "see `newsletter issue list`")
    return found
