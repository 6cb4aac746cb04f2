""" "Connect me" (对接): a reader answers a demand item with a partner; staff follow it up.

The reader's door is a signed link per reader (`tokens.Purpose.CONNECT`, the item in the URL):
`target` reads it (and changes nothing), `answer` records the request (one per reader and item:
a second answer updates the note) and says whom to notify. Staff list, show and move requests
through new, in-contact, matched and closed. Every write joins the audit chain; the chain names
the request, never the person, so nothing of them outlives an erasure there.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from newsletter import cooperation_requests as store
from newsletter import directory
from newsletter.actors import Actor
from newsletter.config import Settings
from newsletter.content.model import Issue, Item
from newsletter.cooperation_requests import Answer, RequestState
from newsletter.db import Engine, Session
from newsletter.errors import NewsletterError
from newsletter.issues import get_issue
from newsletter.mail.cooperation import Notice
from newsletter.models import CooperationRequest, IssueRecord, Subscriber
from newsletter.services import audit
from newsletter.services.units import unit_of_work
from newsletter.subscriptions import lifecycle, suppression
from newsletter.subscriptions import store as subscribers
from newsletter.tokens import InvalidToken, Purpose

LIMITS = {"note": 2000, "organisation": 200, "country": 100}
# Line breaks are welcome in the note; no other control or invisible formatting character.
_BAD = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


class RequestStateError(NewsletterError, ValueError):
    def __init__(self, state: str) -> None:
        names = ", ".join(s.value for s in RequestState)
        super().__init__(f"unknown state {state!r}; use one of {names}")


@dataclass(frozen=True)
class Target:
    """What a valid "connect me" link names: the reader, the issue and the item."""

    subscriber: Subscriber
    record: IssueRecord
    issue: Issue
    item: Item
    mission: str  # the reader's mission as the form shows it, in their language
    existing: CooperationRequest | None


def target(
    session: Session, secret: bytes, slug: str, item_id: str, token: str, *, now: dt.datetime
) -> Target:
    """The link's reader and item; `InvalidToken`, the one refusal of every link, for a forged
    or altered token, an item that takes no answer, or a reader who left or was erased."""
    subscriber, _ = lifecycle.from_token(session, secret, token, Purpose.CONNECT, now=now)
    if subscriber.status in subscribers.DEPARTED or suppression.is_erased(subscriber):
        raise InvalidToken
    try:
        stored = get_issue(session, slug)
    except NewsletterError:
        raise InvalidToken from None
    item = next((i for i in stored.issue.items if i.id == item_id), None)
    if item is None or not item.connectable:
        raise InvalidToken
    assert stored.record.id is not None and subscriber.id is not None
    embassy = directory.embassies(session).get(subscriber.embassy_code)
    mission = subscriber.embassy_code
    if embassy is not None:
        mission = embassy.name_zh if subscriber.language == "zh" else embassy.name_en
    existing = store.find(session, stored.record.id, item.id, subscriber.id)
    return Target(subscriber, stored.record, stored.issue, item, mission, existing)


def check_answer(
    note: str, organisation: str, country: str
) -> tuple[Answer | None, dict[str, str]]:
    """The form's values trimmed, or the problem of each field that cannot be stored."""
    values = {
        "note": note.replace("\r\n", "\n").strip(),
        "organisation": " ".join(organisation.split()),
        "country": " ".join(country.split()),
    }
    problems: dict[str, str] = {}
    for name, value in values.items():
        if _BAD.search(value):
            problems[name] = "bad_characters"
        elif len(value) > LIMITS[name]:
            problems[name] = "too_long"
    if problems:
        return None, problems
    return Answer(values["note"], values["organisation"], values["country"]), {}


@dataclass(frozen=True)
class Answered:
    request: CooperationRequest
    created: bool
    notice: Notice | None  # None: the issue names no contact to tell


def answer(
    session: Session, found: Target, reply: Answer, *, now: dt.datetime, ip: str = ""
) -> Answered:
    """Record (or update) the reader's request and audit it; no commit (the door's unit)."""
    assert found.record.id is not None
    row, created = store.record(
        session, issue_id=found.record.id, item_id=found.item.id, subscriber=found.subscriber,
        answer=reply, now=now,
    )  # fmt: skip
    assert row.id is not None
    audit.record(
        session, Actor.subscriber("link"), "cooperation.request" if created else "cooperation.update",
        target=f"cooperation_request:{row.id}", mission=row.mission, ip=ip,
        detail={"issue": found.record.slug, "item": found.item.id},
    )  # fmt: skip
    contact = found.issue.contact.email.strip()
    notice = None
    if contact:
        who = found.subscriber
        notice = Notice(
            request_id=row.id, contact=contact, issue=found.record.slug, item_id=found.item.id,
            item_title=found.item.title, mission=row.mission, reader=who.name or who.email,
            reader_email=who.email, note=reply.note, organisation=reply.organisation,
            country=reply.country, updated=not created,
        )  # fmt: skip
    return Answered(row, created, notice)


@dataclass(frozen=True)
class RequestView:
    id: int
    issue: str
    item: str
    mission: str
    state: str
    email: str  # "" once the person is erased
    name: str
    note: str
    organisation: str
    country: str
    staff_note: str
    created_at: dt.datetime
    updated_at: dt.datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "issue": self.issue, "item": self.item, "mission": self.mission,
            "state": self.state, "email": self.email, "name": self.name, "note": self.note,
            "organisation": self.organisation, "country": self.country,
            "staff_note": self.staff_note, "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }  # fmt: skip


def _view(found: store.Listed) -> RequestView:
    row = found.row
    assert row.id is not None
    return RequestView(
        row.id, found.issue, row.item_id, row.mission, row.state, found.email, found.name,
        row.note, row.organisation, row.country, row.staff_note, row.created_at, row.updated_at,
    )  # fmt: skip


def _state(state: str) -> RequestState:
    try:
        return RequestState(state)
    except ValueError:
        raise RequestStateError(state) from None


def list_requests(
    settings: Settings,
    *,
    issue: str | None = None,
    mission: str | None = None,
    state: str | None = None,
    db: Engine | None = None,
) -> list[RequestView]:
    """Requests oldest first, by issue, mission and state when asked."""
    if state:
        _state(state)
    with unit_of_work(settings, db, commit=False) as session:
        return [_view(r) for r in store.listed(session, issue=issue, mission=mission, state=state)]


def show_request(settings: Settings, request_id: int, *, db: Engine | None = None) -> RequestView:
    with unit_of_work(settings, db, commit=False) as session:
        store.get(session, request_id)  # NotFoundError, with the hint
        [found] = store.listed(session, request_id=request_id)
        return _view(found)


def update_request(
    settings: Settings,
    request_id: int,
    *,
    state: str,
    note: str | None = None,
    actor: Actor,
    db: Engine | None = None,
) -> RequestView:
    """Move a request to `state` (and set staff's note), audited in the same transaction."""
    wanted = _state(state)
    with unit_of_work(settings, db) as session:
        row = store.get(session, request_id)
        was = row.state
        store.update(session, row, state=wanted, note=note)
        detail: dict[str, object] = {"from": was, "to": wanted.value}
        if note is not None:
            detail["note"] = note
        audit.record(
            session, actor, "cooperation.state", target=f"cooperation_request:{request_id}",
            mission=row.mission, detail=detail,
        )  # fmt: skip
        [found] = store.listed(session, request_id=request_id)
        return _view(found)
