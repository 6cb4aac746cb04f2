"""Campaign requests and their four-eyes sign-off (签发): request, approve, reject, withdraw.

An editor asks for an issue to be sent on a schedule; someone else approves it, and only then
are the campaign and its planned sends made (through `scheduling` and `sending`). With
`[admin] require_second_approver` (the default) the approver may be neither the requester nor
the issue's last editor; an override needs a reason and is audited (which door may offer it is
the door's choice: the console offers it to administrators). A request is bound to the issue's
content hash: an edit voids it (`campaign_requests.void_changed`, run by every save of an
issue), and an approval of changed text is refused. Every step joins the audit chain.

Who may request or approve at all is the door's question (the console asks the role table);
the service holds what is true whoever asks: four eyes, the hash, the request's state.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from newsletter import campaign_requests as store
from newsletter.actors import Actor
from newsletter.campaign_requests import RequestState
from newsletter.config import Settings
from newsletter.db import Engine, Session
from newsletter.errors import NewsletterError
from newsletter.issues import get_issue
from newsletter.models import CampaignRequest, utcnow
from newsletter.scheduling.rules import When
from newsletter.services import audit, scheduling, sending
from newsletter.services import campaigns as campaign_service
from newsletter.services.units import database, unit_of_work

NOW, LOCAL, AT = "now", "local", "at"


class SignOffError(NewsletterError, PermissionError):
    """The sign-off is refused as asked; the message says why and what would do."""


class RequestStateError(NewsletterError, ValueError):
    def __init__(self, request_id: int, state: str, wanted: str) -> None:
        super().__init__(
            f"campaign request {request_id} is {state}, so it cannot be {wanted}; "
            "see `newsletter campaign requests`"
        )


class IssueChangedError(NewsletterError, ValueError):
    def __init__(self, request_id: int, slug: str) -> None:
        super().__init__(
            f"issue {slug} changed after campaign request {request_id} was made, so the request "
            f"is void and nothing was sent; request it again: `newsletter campaign request {slug}`"
        )


@dataclass(frozen=True)
class ScheduleSpec:
    """When a requested campaign goes out: now, each mission's HH:MM on a date, or one instant.

    Stored as staff typed it (a local time is read again at approval, so "09:00 on the first
    day still ahead everywhere" means the first such day after the sign-off).
    """

    kind: str = NOW
    local: str | None = None
    date: str | None = None
    working_days: bool = False
    at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "local": self.local, "date": self.date,
                "working_days": self.working_days, "at": self.at}  # fmt: skip

    @classmethod
    def of(cls, stored: dict[str, Any]) -> ScheduleSpec:
        return cls(
            str(stored.get("kind") or NOW), stored.get("local"), stored.get("date"),
            bool(stored.get("working_days")), stored.get("at"),
        )  # fmt: skip

    def when(self, settings: Settings) -> When:
        """The scheduling value; a local time or date that does not parse raises, naming it."""
        if self.kind == AT:
            return scheduling.when(settings, at=self.at)
        return scheduling.when(
            settings, local=self.local, date=self.date, working_days=self.working_days
        )

    @property
    def described(self) -> str:
        if self.kind == NOW:
            return "立即 now"
        if self.kind == AT:
            return f"{self.at}"
        day = self.date or "the first day still ahead everywhere"
        extra = ", working days" if self.working_days else ""
        return f"{self.local or 'default local time'} local on {day}{extra}"


def schedule_spec(
    settings: Settings,
    *,
    now: bool = False,
    local: str | None = None,
    date: str | None = None,
    working_days: bool = False,
    at: str | None = None,
) -> ScheduleSpec:
    """The spec from what staff chose, checked (times parse; one choice only)."""
    if now:
        if local or date or working_days or at:
            raise SignOffError("now means now: leave out the local time, date and absolute time")
        return ScheduleSpec(NOW)
    if at:
        spec = ScheduleSpec(AT, at=at)
        if local or date or working_days:
            raise scheduling.ConflictingTimesError()
    else:
        spec = ScheduleSpec(LOCAL, local or settings.schedule.local_time, date, working_days)
    spec.when(settings)
    return spec


@dataclass(frozen=True)
class RequestView:
    id: int
    issue: str
    state: str
    schedule: ScheduleSpec
    requested_by: str
    requested_at: dt.datetime
    decided_by: str
    decided_at: dt.datetime | None
    comment: str
    override: str
    campaign: int | None
    issue_hash: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "issue": self.issue, "state": self.state,
            "schedule": self.schedule.as_dict(), "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(), "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "comment": self.comment, "override": self.override, "campaign": self.campaign,
            "issue_hash": self.issue_hash,
        }  # fmt: skip


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _view(request: CampaignRequest, slug: str) -> RequestView:
    assert request.id is not None
    return RequestView(
        request.id, slug, request.state, ScheduleSpec.of(request.schedule), request.requested_by,
        _aware(request.requested_at), request.decided_by,
        _aware(request.decided_at) if request.decided_at else None, request.comment,
        request.override, request.campaign_id, request.issue_hash,
    )  # fmt: skip


def _target(slug: str) -> str:
    return store.issue_target(slug)


# --- reading ----------------------------------------------------------------------------------


def list_requests(
    settings: Settings, *, states: tuple[str, ...] = (), db: Engine | None = None
) -> list[RequestView]:
    """Requests, newest first (only those in `states`, when given)."""
    with unit_of_work(settings, db, commit=False) as session:
        return [_view(r, slug) for r, slug in store.listed(session, states)]


def get_request(settings: Settings, request_id: int, *, db: Engine | None = None) -> RequestView:
    with unit_of_work(settings, db, commit=False) as session:
        request = store.get(session, request_id)
        return _view(request, store.issue_of(session, request).slug)


def request_for_campaign(
    settings: Settings, campaign_id: int, *, db: Engine | None = None
) -> RequestView | None:
    """The sign-off a campaign was made by, if it was made by one."""
    with unit_of_work(settings, db, commit=False) as session:
        request = store.for_campaign(session, campaign_id)
        return None if request is None else _view(request, store.issue_of(session, request).slug)


# --- changing ---------------------------------------------------------------------------------


def request_campaign(
    settings: Settings,
    slug: str,
    spec: ScheduleSpec,
    *,
    actor: Actor,
    ip: str = "",
    db: Engine | None = None,
) -> RequestView:
    """Ask for `slug` to be sent on `spec`; nothing is scheduled until someone approves it."""
    with unit_of_work(settings, db) as session:
        record = get_issue(session, slug).record
        assert record.id is not None
        waiting = [
            r for r in store.open_for_issue(session, record.id) if r.state == RequestState.REQUESTED
        ]
        if waiting:
            raise SignOffError(
                f"issue {slug} already waits for sign-off in request {waiting[0].id}; approve, "
                f"reject or withdraw that one first"
            )
        request = store.add(
            session,
            CampaignRequest(
                issue_id=record.id,
                issue_hash=store.content_hash(record.source_yaml),
                schedule=spec.as_dict(),
                requested_by=actor.label,
            ),  # fmt: skip
        )
        audit.record(
            session, actor, "campaign.request", target=_target(slug), ip=ip,
            detail={"request": request.id, "schedule": spec.as_dict(),
                    "issue_hash": request.issue_hash},
        )  # fmt: skip
        return _view(request, slug)


def _four_eyes(settings: Settings, session: Session, request: CampaignRequest, slug: str,
               approver: Actor) -> str:  # fmt: skip
    """Why `approver` may not sign this off alone ("" when they may)."""
    if not settings.admin.require_second_approver:
        return ""
    if approver.label == request.requested_by:
        return f"{approver.label} made request {request.id}: someone else must approve it"
    editor = store.last_editor(session, slug)
    if editor is not None and editor == approver.label:
        return f"{approver.label} last edited issue {slug}: someone else must approve it"
    return ""


def _void(settings: Settings, engine: Engine, request_id: int, slug: str, actor: Actor) -> None:
    with unit_of_work(settings, engine) as session:
        request = store.get(session, request_id)
        store.decide(session, request, RequestState.VOID, by=actor.label, at=utcnow(),
                     comment="the issue changed after the request")  # fmt: skip
        audit.record(session, actor, "campaign.request-void", target=_target(slug),
                     detail={"request": request_id, "was": "requested"})  # fmt: skip


def _refused(
    settings: Settings, engine: Engine, actor: Actor, slug: str, request_id: int, why: str,
    ip: str,
) -> None:  # fmt: skip
    with unit_of_work(settings, engine) as session:
        audit.record(session, actor, "campaign.approve-refused", target=_target(slug), ip=ip,
                     detail={"request": request_id, "why": why})  # fmt: skip


def approve(
    settings: Settings,
    request_id: int,
    *,
    actor: Actor,
    comment: str = "",
    override: str = "",
    ip: str = "",
    db: Engine | None = None,
    now: dt.datetime | None = None,
) -> RequestView:
    """Sign the request off and make its campaign: scheduled, or queued to send now.

    `override`: a reason to sign off alone (four eyes waived), audited; the door decides who
    may give one.
    """
    moment = now or utcnow()
    with database(settings, db) as engine:
        with unit_of_work(settings, engine, commit=False) as session:
            request = store.get(session, request_id)
            record = store.issue_of(session, request)
            slug, state = record.slug, request.state
            changed = request.issue_hash != store.content_hash(record.source_yaml)
            why = _four_eyes(settings, session, request, slug, actor)
            spec = ScheduleSpec.of(request.schedule)
        if state != RequestState.REQUESTED:
            raise RequestStateError(request_id, state, "approved")
        if changed:
            _void(settings, engine, request_id, slug, actor)
            raise IssueChangedError(request_id, slug)
        if why and not override.strip():
            _refused(settings, engine, actor, slug, request_id, why, ip)
            raise SignOffError(f"four-eyes sign-off: {why}")
        campaign, plans = _make_campaign(settings, engine, slug, spec, actor, moment)
        view: RequestView | None = None
        with unit_of_work(settings, engine) as session:
            request = store.get(session, request_id)
            # An edit between the checks and here voided the request: undo what was made.
            still = request.state == RequestState.REQUESTED and request.issue_hash == (
                store.content_hash(store.issue_of(session, request).source_yaml)
            )
            if still:
                store.decide(
                    session, request, RequestState.APPROVED, by=actor.label, at=moment,
                    comment=comment.strip(), override=override.strip() if why else "",
                )  # fmt: skip
                request.campaign_id = campaign
                session.add(request)
                detail: dict[str, object] = {
                    "request": request_id,
                    "campaign": campaign,
                    "plans": plans,
                    "schedule": spec.as_dict(),
                    "comment": comment.strip(),
                }
                if why:
                    detail["override"] = override.strip()
                    detail["four_eyes"] = why
                audit.record(session, actor, "campaign.approve", target=_target(slug), ip=ip,
                             detail=detail)  # fmt: skip
                view = _view(request, slug)
        if view is None:
            campaign_service.cancel_campaign(settings, campaign, actor=actor, db=engine)
            raise IssueChangedError(request_id, slug)
    return view


def _make_campaign(
    settings: Settings, engine: Engine, slug: str, spec: ScheduleSpec, actor: Actor,
    now: dt.datetime,
) -> tuple[int, list[int]]:  # fmt: skip
    """The campaign (and plans) a sign-off makes: (campaign id, plan ids)."""
    if spec.kind == NOW:
        prepared = sending.prepare_campaign(settings, slug, actor=actor, db=engine)
        return prepared.campaign, []
    scheduled = scheduling.schedule_issue(
        settings, slug, spec.when(settings), actor=actor, db=engine, now=now
    )
    return scheduled.campaign, [p.id for p in scheduled.plans]


def _decide_simply(
    settings: Settings, request_id: int, state: RequestState, action: str, *, actor: Actor,
    comment: str, ip: str, db: Engine | None, only_requester: bool = False,
) -> RequestView:  # fmt: skip
    with unit_of_work(settings, db) as session:
        request = store.get(session, request_id)
        slug = store.issue_of(session, request).slug
        if request.state != RequestState.REQUESTED:
            raise RequestStateError(request_id, request.state, str(state))
        if only_requester and request.requested_by != actor.label:
            raise SignOffError(
                f"only {request.requested_by}, who made request {request_id}, may withdraw it; "
                "reject it instead"
            )
        store.decide(session, request, state, by=actor.label, at=utcnow(), comment=comment)
        audit.record(session, actor, action, target=_target(slug), ip=ip,
                     detail={"request": request_id, "comment": comment})  # fmt: skip
        return _view(request, slug)


def reject(
    settings: Settings,
    request_id: int,
    *,
    actor: Actor,
    comment: str,
    ip: str = "",
    db: Engine | None = None,
) -> RequestView:
    """Turn the request down; the comment (required) tells the requester why."""
    if not comment.strip():
        raise SignOffError("say why the request is rejected: give a comment")
    return _decide_simply(
        settings, request_id, RequestState.REJECTED, "campaign.reject", actor=actor,
        comment=comment.strip(), ip=ip, db=db,
    )  # fmt: skip


def withdraw(
    settings: Settings, request_id: int, *, actor: Actor, ip: str = "", db: Engine | None = None
) -> RequestView:
    """The requester takes their request back before anyone decided."""
    return _decide_simply(
        settings, request_id, RequestState.CANCELLED, "campaign.request-withdraw", actor=actor,
        comment="", ip=ip, db=db, only_requester=True,
    )  # fmt: skip
