"""Issues in the database: store an imported issue, find it by slug, list them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, delete, func, select

from newsletter import campaign_requests
from newsletter.content.issue_yaml import load_issue
from newsletter.content.model import Issue
from newsletter.errors import ContentError, NotFoundError
from newsletter.models import Campaign, Delivery, DeliveryState, IssueRecord, ItemRecord


class IssueAlreadySentError(ContentError):
    def __init__(self, slug: str) -> None:
        self.slug = slug
        super().__init__(
            f"issue {slug} has already been sent to some subscribers and cannot be replaced; "
            "import the corrected issue under a new slug (set `slug:` in the file)"
        )


@dataclass(frozen=True)
class StoredIssue:
    record: IssueRecord
    issue: Issue


def _sent_count(session: Session, issue_id: int) -> int:
    query = (
        select(func.count())
        .select_from(Delivery)
        .join(Campaign, col(Campaign.id) == col(Delivery.campaign_id))
        .where(Campaign.issue_id == issue_id, Delivery.state == DeliveryState.SENT)
        .where(col(Campaign.rehearsal).is_(False))  # a rehearsal sent it to nobody
    )
    return int(session.exec(query).one())


def save_issue(session: Session, issue: Issue, source_yaml: str) -> tuple[IssueRecord, bool]:
    """Store or replace an issue (not one already sent), no commit; the record and whether it is new."""
    record = session.exec(select(IssueRecord).where(IssueRecord.slug == issue.slug)).first()
    created = record is None
    if record is None:
        record = IssueRecord(
            slug=issue.slug, publication=issue.publication, year=issue.year, number=issue.number,
            source_yaml=source_yaml,
        )  # fmt: skip
    else:
        assert record.id is not None
        if _sent_count(session, record.id):
            raise IssueAlreadySentError(issue.slug)
        session.exec(delete(ItemRecord).where(col(ItemRecord.issue_id) == record.id))
    record.publication, record.title_en = issue.publication, issue.title_en
    record.year, record.number, record.date = issue.year, issue.number, issue.date
    record.source_yaml = source_yaml
    session.add(record)
    session.flush()
    assert record.id is not None
    for position, item in enumerate(issue.items):
        session.add(
            ItemRecord(
                issue_id=record.id, position=position, item_id=item.id, section=item.section,
                title=item.title, sectors=list(item.sectors), regions=list(item.regions),
                always=item.always,
            )
        )  # fmt: skip
    session.flush()
    if not created:  # a sign-off holds for the text it saw, not this one
        campaign_requests.void_changed(session, record)
    return record, created


class StoredIssueError(ContentError):
    """A stored issue no longer loads: stored before a check that now refuses it at import."""

    def __init__(self, slug: str, problem: ContentError) -> None:
        self.slug = slug
        self.problem = problem
        super().__init__(
            f"{problem}; issue {slug} was stored before this was refused at import: "
            "import a corrected file with `newsletter issue import`"
        )


def get_issue(session: Session, slug: str) -> StoredIssue:
    """The stored issue; `StoredIssueError` when its text breaks a rule added since its import."""
    record = session.exec(select(IssueRecord).where(IssueRecord.slug == slug)).first()
    if record is None:
        raise NotFoundError("issue", slug, "see `newsletter issue list`")
    try:
        issue = load_issue(record.source_yaml, source=f"issue {slug}")
    except ContentError as exc:
        raise StoredIssueError(slug, exc) from None
    return StoredIssue(record, issue)


def issue_source(session: Session, slug: str) -> str:
    """The stored YAML of an issue, unparsed: what a long-running sender keys its cache by."""
    source = session.exec(select(IssueRecord.source_yaml).where(IssueRecord.slug == slug)).first()
    if source is None:
        raise NotFoundError("issue", slug, "see `newsletter issue list`")
    return source


def list_issues(session: Session) -> list[IssueRecord]:
    return list(
        session.exec(select(IssueRecord).order_by(col(IssueRecord.year), col(IssueRecord.number)))
    )


def published_issues(session: Session) -> list[IssueRecord]:
    """Issues sent to at least one subscriber, newest first; drafts stay private until then."""
    sent = (
        select(Campaign.issue_id)
        .join(Delivery, col(Delivery.campaign_id) == col(Campaign.id))
        .where(Delivery.state == DeliveryState.SENT, col(Campaign.rehearsal).is_(False))
    )
    query = (
        select(IssueRecord)
        .where(col(IssueRecord.id).in_(sent))
        .order_by(col(IssueRecord.year).desc(), col(IssueRecord.number).desc())
    )
    return list(session.exec(query).all())
