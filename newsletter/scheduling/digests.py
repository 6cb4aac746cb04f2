"""Recurring digests: who is owed which imported issue, and the ledger of items received."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, insert, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, func, select

from newsletter import directory
from newsletter.content.model import Item
from newsletter.delivery.campaigns import open_campaign, taken_back
from newsletter.errors import NewsletterError, NotFoundError
from newsletter.interests import sectors_of
from newsletter.models import (
    Campaign,
    CampaignState,
    Delivery,
    DeliveryState,
    DigestRun,
    DigestSchedule,
    DigestState,
    Embassy,
    IssueRecord,
    ItemRecord,
    PlanState,
    ReceivedItem,
    SchedulePlan,
    Subscriber,
    SubscriberStatus,
)
from newsletter.scheduling import modes
from newsletter.scheduling.arrival import DEFAULT_CATCH_UP, latest_published, may_receive
from newsletter.scheduling.cadence import Cadence
from newsletter.scheduling.missions import missions as missions_of
from newsletter.scheduling.rules import next_working_instant, zone
from newsletter.states import RESCHEDULABLE, move
from newsletter.tailor import Audience, decide
from newsletter.taxonomy import EmbassyDef

UTC_ZONE = ""  # the zone label of a digest read in UTC


class DigestStateError(NewsletterError, ValueError):
    def __init__(self, digest_id: int) -> None:
        super().__init__(f"digest {digest_id} is already cancelled; see `newsletter digest list`")


def as_item(record: ItemRecord) -> Item:
    """What tailoring reads of a stored item (the body is not needed to decide)."""
    return Item(
        id=record.item_id, section=record.section, title=record.title, body="",
        sectors=tuple(record.sectors), regions=tuple(record.regions), always=record.always,
    )  # fmt: skip


def included_items(items: Sequence[ItemRecord], audience: Audience) -> frozenset[int]:
    """Database ids of the items of one issue that a subscriber's digest carries."""
    return frozenset(
        r.id for r in items if r.id is not None and decide(as_item(r), audience).included
    )


def owes_issue(included: frozenset[int], received: frozenset[int]) -> bool:
    """Send this issue only if it has items for them and none they were already sent.

    The engine sends a whole tailored issue, so an issue partly received (through a campaign
    later cancelled, or after a change of sectors) is not sent again: never twice wins.
    """
    return bool(included) and included.isdisjoint(received)


def audience(embassy: EmbassyDef | None, sectors: Iterable[str]) -> Audience:
    return Audience(
        sectors=frozenset(sectors),
        default_sectors=frozenset(embassy.default_sectors) if embassy else frozenset(),
        places=embassy.places if embassy else frozenset(),
    )


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, object]]) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    session.execute(module.insert(ReceivedItem).on_conflict_do_nothing(), rows)


def record_received(session: Session, *, now: dt.datetime, campaign_id: int | None = None) -> int:
    """Write the items of every sent delivery not yet in the ledger; how many deliveries."""
    recorded = select(ReceivedItem.delivery_id).where(
        col(ReceivedItem.delivery_id) == col(Delivery.id)
    )
    query = (
        select(Delivery.id, Delivery.subscriber_id, Campaign.issue_id, Subscriber.embassy_code)
        .join(Campaign, col(Campaign.id) == col(Delivery.campaign_id))
        .join(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
        .where(col(Delivery.state) == DeliveryState.SENT, ~recorded.exists())
        .where(col(Campaign.rehearsal).is_(False))  # a rehearsal delivered nothing
    )
    if campaign_id is not None:
        query = query.where(col(Delivery.campaign_id) == campaign_id)
    sent = session.exec(query).all()
    if not sent:
        return 0
    embassies = directory.embassies(session)
    sectors = sectors_of(session, {s for _, s, _, _ in sent})
    items = _items_by_issue(session, {i for _, _, i, _ in sent})
    rows: list[dict[str, object]] = []
    for delivery_id, subscriber_id, issue_id, embassy in sent:
        who = audience(embassies.get(embassy), sectors.get(subscriber_id, ()))
        for item_id in included_items(items.get(issue_id, []), who):
            rows.append({"subscriber_id": subscriber_id, "item_id": item_id,
                         "delivery_id": delivery_id, "received_at": now})  # fmt: skip
    _insert_ignoring_duplicates(session, rows)
    session.flush()
    return len(sent)


def _items_by_issue(session: Session, issue_ids: Iterable[int]) -> dict[int, list[ItemRecord]]:
    out: dict[int, list[ItemRecord]] = defaultdict(list)
    query = (
        select(ItemRecord)
        .where(col(ItemRecord.issue_id).in_(list(issue_ids)))
        .order_by(col(ItemRecord.position))
    )
    for record in session.exec(query):
        out[record.issue_id].append(record)
    return out


def _received(session: Session, subscriber_ids: list[int]) -> dict[int, frozenset[int]]:
    out: dict[int, set[int]] = defaultdict(set)
    for start in range(0, len(subscriber_ids), 500):
        chunk = subscriber_ids[start : start + 500]
        query = select(ReceivedItem.subscriber_id, ReceivedItem.item_id).where(
            col(ReceivedItem.subscriber_id).in_(chunk)
        )
        for subscriber_id, item_id in session.exec(query):
            out[subscriber_id].add(item_id)
    return {k: frozenset(v) for k, v in out.items()}


def _digest_may_use(session: Session, campaign: Campaign | None) -> bool:
    """Not when staff paused or cancelled the issue's campaign, nor while a scheduled send of
    it is still to come (that plan covers its readers)."""
    if campaign is None:
        return True
    if campaign.state in (CampaignState.PAUSED, CampaignState.CANCELLED):
        return False
    planned = session.exec(
        select(SchedulePlan.id).where(
            SchedulePlan.campaign_id == campaign.id, SchedulePlan.state == PlanState.PLANNED
        )
    ).first()
    return planned is None


@dataclass
class DigestOutcome:
    issues: int = 0
    enqueued: int = 0
    per_issue: dict[str, int] = field(default_factory=dict)
    deferred: int = 0  # rows of missions closed today, due at their next working morning


def _active(session: Session, timezone: str | None) -> list[tuple[int, str]]:
    query = (
        select(Subscriber.id, Subscriber.embassy_code)
        .join(Embassy, col(Embassy.code) == col(Subscriber.embassy_code))
        .where(col(Subscriber.status) == SubscriberStatus.ACTIVE)
        .order_by(col(Subscriber.id))
    )
    if timezone:
        query = query.where(col(Embassy.timezone) == timezone)
    return [(int(i), code) for i, code in session.exec(query).all() if i is not None]


def enqueue_digest(
    session: Session,
    *,
    timezone: str | None,
    now: dt.datetime,
    grace: dt.timedelta,
    working_days: bool = False,
    catch_up: dt.timedelta = DEFAULT_CATCH_UP,
) -> DigestOutcome:
    """Queue, per imported issue, the active subscribers (of one zone) it owes; send window
    opens now (`working_days`: at the next working morning of a mission closed today) and
    closes after the grace. Someone who joined after an issue went out is owed it only if it
    is the latest and went out within `catch_up` (see `arrival`)."""
    record_received(session, now=now)
    subscribers = _served_today(session, _active(session, timezone), now)
    embassies = directory.embassies(session)
    sectors = sectors_of(session, [s for s, _ in subscribers])
    audiences = {s: audience(embassies.get(e), sectors.get(s, ())) for s, e in subscribers}
    opens = _opening_times(session, subscribers, now) if working_days else {}
    received = _received(session, [s for s, _ in subscribers])
    outcome = DigestOutcome()
    for eligible in eligible_issues(session, audiences, now=now, catch_up=catch_up):
        issue, latest = eligible.issue, eligible.latest
        owed = owed_subscribers(eligible.items, eligible.allowed, received, eligible.already)
        if owed:
            # The issue's own campaign: its ledger (one row per subscriber) forbids a repeat.
            campaign = latest or open_campaign(session, issue)[0]
            _enqueue(session, campaign, owed, now=now, grace=grace, opens=opens)
            outcome.issues += 1
            outcome.enqueued += len(owed)
            outcome.deferred += sum(1 for s in owed if s in opens)
            outcome.per_issue[issue.slug] = len(owed)
    return outcome


@dataclass(frozen=True)
class Eligible:
    """One issue a digest run may use, with the subscribers allowed it and not in its ledger."""

    issue: IssueRecord
    latest: Campaign | None  # its newest campaign (rehearsals aside), None before any send
    allowed: dict[int, Audience]  # who may receive it (arrival rules), with their audience
    already: set[int]  # subscribers its ledger has (sent, sending, or decided against)
    items: list[ItemRecord]


def eligible_issues(
    session: Session,
    audiences: dict[int, Audience],
    *,
    now: dt.datetime,
    catch_up: dt.timedelta = DEFAULT_CATCH_UP,
) -> list[Eligible]:
    """The imported issues, in publication order, a digest run may use for these subscribers:
    not held by staff nor by a plan still to come; each with who may receive it."""
    issues = session.exec(
        select(IssueRecord).order_by(col(IssueRecord.year), col(IssueRecord.number))
    ).all()
    items = _items_by_issue(session, [i.id for i in issues if i.id is not None])
    published = _first_sent(session)
    newest = latest_published(published)
    joined = _joined(session, list(audiences))
    out = []
    for issue in issues:
        assert issue.id is not None
        latest = session.exec(
            select(Campaign)
            .where(Campaign.issue_id == issue.id, col(Campaign.rehearsal).is_(False))
            .order_by(col(Campaign.id).desc())
        ).first()
        if not _digest_may_use(session, latest):
            continue
        first = published.get(issue.id)
        allowed = {
            s: who for s, who in audiences.items()
            if may_receive(first, joined[s], latest=issue.id == newest, now=now, catch_up=catch_up)
        }  # fmt: skip
        out.append(
            Eligible(issue, latest, allowed, _in_ledger(session, latest), items.get(issue.id, []))
        )
    return out


def _first_sent(session: Session) -> dict[int, dt.datetime | None]:
    """When each issue's first mail went out (rehearsals are no delivery)."""
    query = (
        select(Campaign.issue_id, func.min(Delivery.sent_at))
        .join(Delivery, col(Delivery.campaign_id) == col(Campaign.id))
        .where(col(Delivery.state) == DeliveryState.SENT, col(Campaign.rehearsal).is_(False))
        .group_by(col(Campaign.issue_id))
    )
    return {int(issue): at for issue, at in session.exec(query).all()}


def _joined(session: Session, subscriber_ids: list[int]) -> dict[int, dt.datetime]:
    """When each subscriber joined: confirmed, or added when they needed no confirmation."""
    out: dict[int, dt.datetime] = {}
    for start in range(0, len(subscriber_ids), 500):
        query = select(Subscriber.id, Subscriber.confirmed_at, Subscriber.created_at).where(
            col(Subscriber.id).in_(subscriber_ids[start : start + 500])
        )
        for sid, confirmed, created in session.exec(query).all():
            if sid is not None:
                out[sid] = confirmed or created
    return out


def _served_today(
    session: Session, subscribers: list[tuple[int, str]], now: dt.datetime
) -> list[tuple[int, str]]:
    """Those this run serves on their mission's local date: not on leave, and weekly or
    monthly readers only on their weekday's run."""
    known = missions_of(session)
    rhythm = modes.cadences(session, [s for s, _ in subscribers])

    def local_day(code: str) -> dt.date:
        mission = known.get(code)
        return now.astimezone(zone(mission.timezone)).date() if mission else now.date()

    days = {code: local_day(code) for code in {c for _, c in subscribers}}
    return [(s, c) for s, c in subscribers if rhythm.get(s, Cadence()).digest_day(days[c])]


def _opening_times(
    session: Session, subscribers: Sequence[tuple[int, str]], now: dt.datetime
) -> dict[int, dt.datetime]:
    """Subscribers whose mission is closed today (holiday, closure, weekend): when its next
    working morning begins, at the same local time."""
    known = missions_of(session)
    per_mission = {
        code: next_working_instant(m, now)[0] for code, m in known.items()
    }  # fmt: skip
    return {s: per_mission[code] for s, code in subscribers if per_mission.get(code, now) != now}


def _in_ledger(session: Session, campaign: Campaign | None) -> set[int]:
    """Subscribers the campaign sent, is sending, or decided not to send to; not those whose
    row was skipped only because its scheduled send was cancelled or missed."""
    if campaign is None:
        return set()
    # Spelt out rather than NOT taken_back(): a NULL skip_reason would make that NULL, not true.
    kept = or_(
        col(Delivery.state) != DeliveryState.SKIPPED,
        col(Delivery.skip_reason).is_(None),
        col(Delivery.skip_reason).not_in(RESCHEDULABLE),
    )
    query = select(Delivery.subscriber_id).where(Delivery.campaign_id == campaign.id, kept)
    return set(session.exec(query))


def owed_subscribers(
    items: Sequence[ItemRecord],
    audiences: dict[int, Audience],
    received: dict[int, frozenset[int]],
    already: set[int],
) -> list[int]:
    """Subscribers the issue owes, in id order: not in its ledger, something new for them."""
    cache: dict[Audience, frozenset[int]] = {}
    owed = []
    for subscriber_id, who in audiences.items():
        if subscriber_id in already:
            continue
        if who not in cache:
            cache[who] = included_items(items, who)
        if owes_issue(cache[who], received.get(subscriber_id, frozenset())):
            owed.append(subscriber_id)
    return owed


def _enqueue(
    session: Session,
    campaign: Campaign,
    subscriber_ids: list[int],
    *,
    now: dt.datetime,
    grace: dt.timedelta,
    opens: dict[int, dt.datetime] | None = None,
) -> None:
    """Queue the rows; a subscriber in `opens` waits until then (their mission is closed now)."""
    by_opening: dict[dt.datetime, list[int]] = defaultdict(list)
    for s in subscriber_ids:
        by_opening[(opens or {}).get(s, now)].append(s)
    for opening, ids in sorted(by_opening.items()):
        window = {"not_before": opening, "not_after": opening + grace, "updated_at": now}
        # A row left skipped by a cancelled or missed schedule is taken back (one per pair).
        skipped = (
            (col(Delivery.campaign_id) == campaign.id)
            & col(Delivery.subscriber_id).in_(ids)
            & taken_back()
        )
        back = set(session.exec(select(Delivery.subscriber_id).where(skipped)))
        if back:
            session.execute(
                update(Delivery)
                .where(skipped)
                .values(state=DeliveryState.QUEUED, reply="", skip_reason=None, **window)
            )
        new = [s for s in ids if s not in back]
        if new:
            session.execute(
                insert(Delivery),
                [{"campaign_id": campaign.id, "subscriber_id": s, "state": DeliveryState.QUEUED,
                  **window} for s in new],
            )  # fmt: skip
    # The rows are due now: the campaign is sending.
    idle = (CampaignState.READY, CampaignState.SCHEDULED, CampaignState.FINISHED)
    if campaign.state in idle:
        move(campaign, CampaignState.SENDING, reason=campaign.reason, now=now)
        session.add(campaign)
    session.flush()


def create_digest(
    session: Session, *, cron: str, local: bool, now: dt.datetime, working_days: bool = False
) -> DigestSchedule:
    digest = DigestSchedule(cron=cron, local=local, created_at=now, working_days=working_days)
    session.add(digest)
    session.flush()
    return digest


def digest_zones(session: Session, digest: DigestSchedule) -> list[str]:
    """The zones a digest has one job for: every mission's zone when read locally."""
    if not digest.local:
        return [UTC_ZONE]
    return sorted(set(session.exec(select(Embassy.timezone)).all()))


def get_digest(session: Session, digest_id: int) -> DigestSchedule:
    digest = session.get(DigestSchedule, digest_id)
    if digest is None:
        raise NotFoundError("digest", str(digest_id), "see `newsletter digest list`")
    return digest


def cancel_digest(session: Session, digest_id: int) -> DigestSchedule:
    digest = get_digest(session, digest_id)
    if digest.state == DigestState.CANCELLED:
        raise DigestStateError(digest_id)
    digest.state = DigestState.CANCELLED
    session.add(digest)
    session.flush()
    return digest


def all_digests(session: Session) -> list[DigestSchedule]:
    return list(session.exec(select(DigestSchedule).order_by(col(DigestSchedule.id))))


def active_digests(session: Session) -> list[DigestSchedule]:
    query = select(DigestSchedule).where(col(DigestSchedule.state) == DigestState.ACTIVE)
    return list(session.exec(query))


def record_run(
    session: Session,
    digest_id: int,
    timezone: str,
    *,
    state: str,
    now: dt.datetime,
    scheduled_for: dt.datetime | None = None,
    outcome: DigestOutcome | None = None,
) -> None:
    run = DigestRun(
        digest_id=digest_id, timezone=timezone, state=state, scheduled_for=scheduled_for,
        ran_at=now, issues=outcome.issues if outcome else 0,
        enqueued=outcome.enqueued if outcome else 0,
    )  # fmt: skip
    session.add(run)
    session.flush()


def last_runs(session: Session) -> dict[tuple[int, str], DigestRun]:
    out: dict[tuple[int, str], DigestRun] = {}
    for run in session.exec(select(DigestRun).order_by(col(DigestRun.id))):
        out[(run.digest_id, run.timezone)] = run
    return out


def run_digest_once(
    db: Engine,
    digest_id: int,
    timezone: str,
    *,
    now: dt.datetime,
    grace: dt.timedelta,
    catch_up: dt.timedelta = DEFAULT_CATCH_UP,
) -> DigestOutcome | None:
    """One run of a digest job; None when the digest was cancelled meanwhile."""
    with Session(db, expire_on_commit=False) as session:
        digest = session.get(DigestSchedule, digest_id)
        if digest is None or digest.state != DigestState.ACTIVE:
            return None
        outcome = enqueue_digest(
            session, timezone=timezone or None, now=now, grace=grace,
            working_days=digest.working_days, catch_up=catch_up,
        )  # fmt: skip
        record_run(session, digest_id, timezone, state="ran", now=now, outcome=outcome)
        session.commit()  # the job's unit of work: the rows queued and the run recorded together
        return outcome
