"""Cooperation requests ("connect me" / 对接) in the database: record, find, list, follow up,
anonymise. Flushes, never commits (the services own the transaction)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from sqlmodel import Session, col, select

from newsletter.errors import NotFoundError
from newsletter.models import CooperationRequest, IssueRecord, Subscriber, utcnow


class RequestState(StrEnum):
    NEW = "new"
    IN_CONTACT = "in-contact"
    MATCHED = "matched"
    CLOSED = "closed"


@dataclass(frozen=True)
class Answer:
    """What a reader wrote on the form (each field already checked and trimmed)."""

    note: str
    organisation: str
    country: str


def find(
    session: Session, issue_id: int, item_id: str, subscriber_id: int
) -> CooperationRequest | None:
    query = select(CooperationRequest).where(
        CooperationRequest.issue_id == issue_id,
        CooperationRequest.item_id == item_id,
        CooperationRequest.subscriber_id == subscriber_id,
    )
    return session.exec(query).first()


def record(
    session: Session,
    *,
    issue_id: int,
    item_id: str,
    subscriber: Subscriber,
    answer: Answer,
    now: dt.datetime,
) -> tuple[CooperationRequest, bool]:
    """The reader's request for the item, made or (a second answer) updated; True when new.

    A second answer keeps the state staff have moved it to; only what the reader wrote changes.
    """
    assert subscriber.id is not None
    row = find(session, issue_id, item_id, subscriber.id)
    created = row is None
    if row is None:
        row = CooperationRequest(
            issue_id=issue_id, item_id=item_id, subscriber_id=subscriber.id,
            mission=subscriber.embassy_code, created_at=now,
        )  # fmt: skip
    row.note, row.organisation, row.country = answer.note, answer.organisation, answer.country
    row.updated_at = now
    session.add(row)
    session.flush()
    return row, created


def get(session: Session, request_id: int) -> CooperationRequest:
    row = session.get(CooperationRequest, request_id)
    if row is None:
        raise NotFoundError(
            "cooperation request", str(request_id), "see `newsletter requests list`"
        )
    return row


@dataclass(frozen=True)
class Listed:
    """A request with what staff read beside it: the issue's slug, the person's address."""

    row: CooperationRequest
    issue: str
    email: str  # "" once the person is erased
    name: str


def listed(
    session: Session,
    *,
    issue: str | None = None,
    mission: str | None = None,
    state: str | None = None,
    request_id: int | None = None,
    subscriber_id: int | None = None,
) -> list[Listed]:
    query = (
        select(CooperationRequest, IssueRecord.slug, Subscriber)
        .join(IssueRecord, col(IssueRecord.id) == col(CooperationRequest.issue_id))
        .outerjoin(Subscriber, col(Subscriber.id) == col(CooperationRequest.subscriber_id))
    )
    if issue:
        query = query.where(IssueRecord.slug == issue)
    if mission:
        query = query.where(CooperationRequest.mission == mission)
    if state:
        query = query.where(CooperationRequest.state == state)
    if request_id is not None:
        query = query.where(CooperationRequest.id == request_id)
    if subscriber_id is not None:
        query = query.where(CooperationRequest.subscriber_id == subscriber_id)
    rows = session.exec(query.order_by(col(CooperationRequest.id))).all()
    return [
        Listed(row, slug, who.email if who else "", who.name if who else "")
        for row, slug, who in rows
    ]


def update(
    session: Session, row: CooperationRequest, *, state: RequestState, note: str | None
) -> None:
    row.state = state.value
    if note is not None:
        row.staff_note = note
    row.updated_at = utcnow()
    session.add(row)
    session.flush()


def anonymise(session: Session, subscriber_id: int) -> int:
    """The person's requests without the person: item, mission, time and state stay."""
    rows = session.exec(
        select(CooperationRequest).where(CooperationRequest.subscriber_id == subscriber_id)
    ).all()
    for row in rows:
        row.subscriber_id = None
        row.note = row.organisation = row.country = ""
        session.add(row)
    session.flush()
    return len(rows)
