"""What a combined digest would carry for each subscriber now, read from the database.

The adapter between the digest run's rules (`digests.eligible_issues`: held issues, arrival,
each issue's ledger) and the pure `render.combined.combine`: the issues owed, their content,
and the items the received-items ledger says each reader already has.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlmodel import Session, col, select

from newsletter import directory
from newsletter.content.issue_yaml import load_issue
from newsletter.content.model import Issue
from newsletter.interests import sectors_of
from newsletter.models import IssueRecord, ItemRecord, ReceivedItem, Subscriber
from newsletter.render.combined import CombinedSelection, ItemKey, combine
from newsletter.scheduling.arrival import DEFAULT_CATCH_UP
from newsletter.scheduling.digests import audience, eligible_issues


def received_keys(session: Session, subscriber_ids: list[int]) -> dict[int, frozenset[ItemKey]]:
    """The items each subscriber has received, named (issue slug, item id)."""
    out: dict[int, set[ItemKey]] = defaultdict(set)
    for start in range(0, len(subscriber_ids), 500):
        query = (
            select(ReceivedItem.subscriber_id, IssueRecord.slug, ItemRecord.item_id)
            .join(ItemRecord, col(ItemRecord.id) == col(ReceivedItem.item_id))
            .join(IssueRecord, col(IssueRecord.id) == col(ItemRecord.issue_id))
            .where(col(ReceivedItem.subscriber_id).in_(subscriber_ids[start : start + 500]))
        )
        for subscriber_id, slug, item_id in session.exec(query):
            out[subscriber_id].add((slug, item_id))
    return {k: frozenset(v) for k, v in out.items()}


def owed_combined(
    session: Session,
    subscriber_ids: list[int],
    *,
    now: dt.datetime,
    catch_up: dt.timedelta = DEFAULT_CATCH_UP,
) -> dict[int, CombinedSelection]:
    """Per subscriber: every issue they may receive and whose ledger does not have them yet,
    tailored, minus what they received. Reads only; an empty selection means nothing is owed."""
    rows = session.exec(
        select(Subscriber.id, Subscriber.embassy_code).where(col(Subscriber.id).in_(subscriber_ids))
    ).all()
    embassies = directory.embassies(session)
    sectors = sectors_of(session, subscriber_ids)
    audiences = {
        int(s): audience(embassies.get(code), sectors.get(int(s), ()))
        for s, code in rows
        if s is not None
    }
    issues: dict[int, Issue] = {}  # parsed once per issue, whoever is owed it
    owed: dict[int, list[Issue]] = defaultdict(list)
    for eligible in eligible_issues(session, audiences, now=now, catch_up=catch_up):
        record = eligible.issue
        assert record.id is not None
        for subscriber_id in eligible.allowed:
            if subscriber_id in eligible.already:
                continue
            if record.id not in issues:
                issues[record.id] = load_issue(record.source_yaml, source=f"issue {record.slug}")
            owed[subscriber_id].append(issues[record.id])
    received = received_keys(session, list(audiences))
    return {
        s: combine(owed.get(s, []), received.get(s, frozenset()), who)
        for s, who in audiences.items()
    }
