"""Which sectors each subscriber follows, read in bulk (the engine reads hundreds per batch)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlmodel import Session, col, select

from newsletter.models import Sector, SubscriberSector


def sectors_of(session: Session, subscriber_ids: Iterable[int]) -> dict[int, tuple[str, ...]]:
    """Each subscriber's sector codes, in the taxonomy's order (subscribers with none left out)."""
    ids = list(subscriber_ids)
    out: dict[int, list[str]] = defaultdict(list)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = session.exec(
            select(SubscriberSector.subscriber_id, SubscriberSector.sector_code)
            .join(Sector, col(Sector.code) == col(SubscriberSector.sector_code))
            .where(col(SubscriberSector.subscriber_id).in_(chunk))
            .order_by(col(Sector.position))
        ).all()
        for subscriber_id, code in rows:
            out[subscriber_id].append(code)
    return {k: tuple(v) for k, v in out.items()}
