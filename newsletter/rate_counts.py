"""Hit counters of the subscribe-form limits: one row per (scope, key, window number)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session, col

from newsletter.models import WebRateLimit


def _upsert(dialect: str, scope: str, key: str, number: int) -> Insert:
    values = {"scope": scope, "key": key, "slot": number, "hits": 1}
    table = WebRateLimit.__table__  # type: ignore[attr-defined]
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).values(values)
    return statement.on_conflict_do_update(
        index_elements=["scope", "key", "slot"], set_={"hits": table.c.hits + 1}
    ).returning(table.c.hits)


def count_hit(
    engine: Engine, scope: str, key: str, number: int, fits: Callable[[int, int], bool]
) -> tuple[bool, int, int]:
    """Count one hit of `key` in window `number`; keep it if `fits(previous, current)`.

    Its own short transaction: a form's limit is checked before anything else happens, and
    must hold across processes. Returns (kept, hits in the previous window, hits in this one
    with this hit).
    """
    mine = (col(WebRateLimit.scope) == scope) & (col(WebRateLimit.key) == key)
    with Session(engine) as session:
        # One atomic statement counts the hit, so two processes never both take the last one.
        current = int(
            session.execute(_upsert(engine.dialect.name, scope, key, number)).scalar_one()
        )
        before = select(col(WebRateLimit.hits)).where(mine, col(WebRateLimit.slot) == number - 1)
        previous = session.execute(before).scalar_one_or_none() or 0
        kept = fits(previous, current)
        if kept:
            session.execute(delete(WebRateLimit).where(col(WebRateLimit.slot) < number - 1))
        else:
            session.execute(
                update(WebRateLimit)
                .where(mine, col(WebRateLimit.slot) == number)
                .values(hits=col(WebRateLimit.hits) - 1)
            )
        session.commit()
    return kept, previous, current
