"""The audit chain in the database: append (serialised, so two writers never fork the chain),
list, count recent events and read it back in order for verification. Flushes, never commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, func, insert, text
from sqlmodel import Session, col, select

from newsletter import audit_chain
from newsletter.models import AdminEvent, utcnow

# Any constant: the one advisory lock every chain writer on PostgreSQL takes.
_PG_LOCK = 0x6E6C_6175  # "nlau"
_HEAD = "newsletter.audit_head"


@dataclass(frozen=True)
class Entry:
    """An event to append: what the writer knows; time and hashes are added here."""

    actor_kind: str
    actor_id: str
    via: str
    action: str
    target: str = ""
    mission: str = ""
    detail: Mapping[str, object] | None = None
    ip: str = ""


def _lock(session: Session) -> None:
    """Hold the chain until this transaction ends, before its last hash is read."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
    else:
        # SQLite has one writer at a time: a write statement (this one changes nothing) takes
        # the database's write lock now, so no other writer appends between read and insert.
        session.execute(text("UPDATE admin_event SET id = id WHERE 0 = 1"))


def _head(session: Session) -> str:
    transaction = session.get_transaction()
    cached = session.info.get(_HEAD)
    if cached is not None and cached[0] is transaction:
        return str(cached[1])
    _lock(session)
    last = session.exec(select(AdminEvent.hash).order_by(col(AdminEvent.id).desc())).first()
    return last or audit_chain.GENESIS


def append(session: Session, entry: Entry, *, at: dt.datetime | None = None) -> None:
    append_many(session, [entry], at=at)


def append_many(
    session: Session, entries: Sequence[Entry], *, at: dt.datetime | None = None
) -> None:
    """Chain `entries` in order, in one statement: an import of many rows writes its events in one
    batch instead of a statement and a round trip each."""
    prev = _head(session)
    when = at or utcnow()
    rows = []
    for entry in entries:
        row: dict[str, object] = {
            "at": when, "actor_kind": entry.actor_kind[:20], "actor_id": entry.actor_id[:320],
            "via": entry.via[:20], "action": entry.action[:60], "target": entry.target[:340],
            "mission": entry.mission[:60], "detail": audit_chain.detail_text(entry.detail),
            "ip": entry.ip[:45], "prev_hash": prev,
        }  # fmt: skip
        row["hash"] = prev = audit_chain.link(
            prev, {name: row[name] for name in audit_chain.FIELDS}
        )
        rows.append(row)
    # Plain rows in one executemany: an ORM object per event cost more than its INSERT.
    session.execute(insert(cast(Table, AdminEvent.__table__)), rows)  # type: ignore[attr-defined]
    # Later appends in this transaction (it holds the lock) follow on without another read.
    session.info[_HEAD] = (session.get_transaction(), prev)


def fields(event: AdminEvent) -> dict[str, object]:
    return {name: getattr(event, name) for name in audit_chain.FIELDS}


def in_order(session: Session, batch: int = 1000) -> Iterator[AdminEvent]:
    """Every event, oldest first, a batch at a time (the chain may be long)."""
    after = 0
    while True:
        query = select(AdminEvent).where(col(AdminEvent.id) > after)
        rows = session.exec(query.order_by(col(AdminEvent.id)).limit(batch)).all()
        if not rows:
            return
        yield from rows
        after = rows[-1].id or after


def recent(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    mission_scope: frozenset[str] | None = None,
    limit: int = 100,
) -> list[AdminEvent]:
    """The newest events first; `actor` is `kind:id` or a bare id, `action` a prefix or name."""
    query = select(AdminEvent)
    if actor:
        kind, _, ident = actor.partition(":")
        if ident:
            query = query.where(AdminEvent.actor_kind == kind, AdminEvent.actor_id == ident)
        else:
            query = query.where(
                (col(AdminEvent.actor_id) == actor) | (col(AdminEvent.actor_kind) == actor)
            )
    if action:
        query = query.where(
            (col(AdminEvent.action) == action) | col(AdminEvent.action).startswith(f"{action}.")
        )
    if mission_scope is not None:
        query = query.where(col(AdminEvent.mission).in_(sorted(mission_scope)))
    return list(session.exec(query.order_by(col(AdminEvent.id).desc()).limit(limit)).all())


def search(
    session: Session,
    *,
    actor: str = "",
    action: str = "",
    target: str = "",
    mission: str = "",
    since: dt.datetime | None = None,
    before: dt.datetime | None = None,
    missions: frozenset[str] | None = None,
    own: str = "",
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[AdminEvent], int]:
    """A page of events, newest first, and how many match in all. Visible are the events about
    `missions` (None: every event) and, with `own`, those the staff member `own` did."""
    query = select(AdminEvent)
    if actor:
        kind, _, ident = actor.partition(":")
        if ident and kind in _KINDS:
            query = query.where(AdminEvent.actor_kind == kind, AdminEvent.actor_id == ident)
        else:
            query = query.where(col(AdminEvent.actor_id).contains(actor))
    if action:
        query = query.where(
            (col(AdminEvent.action) == action) | col(AdminEvent.action).startswith(f"{action}.")
        )
    if target:
        query = query.where(col(AdminEvent.target).contains(target))
    if mission:
        query = query.where(AdminEvent.mission == mission)
    if since is not None:
        query = query.where(col(AdminEvent.at) >= since)
    if before is not None:
        query = query.where(col(AdminEvent.at) < before)
    if missions is not None:
        mine = (col(AdminEvent.actor_kind) == "staff") & (col(AdminEvent.actor_id) == own)
        about = col(AdminEvent.mission).in_(sorted(missions))
        query = query.where(about | mine if own else about)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(AdminEvent.id).desc()).offset(offset).limit(limit))
    return list(rows.all()), int(total)


def count_since(
    session: Session, action: str, since: dt.datetime, *, target: str = "", ip: str = ""
) -> int:
    """How many `action` events since `since`, for one target or one client address."""
    query = select(func.count()).select_from(AdminEvent)
    query = query.where(AdminEvent.action == action, col(AdminEvent.at) >= since)
    if target:
        query = query.where(AdminEvent.target == target)
    if ip:
        query = query.where(AdminEvent.ip == ip)
    return int(session.exec(query).one())


_KINDS = ("staff", "token", "subscriber", "system", "cli")


def split_label(label: str) -> tuple[str, str]:
    """(kind, id) of an `Actor.label` as older code passes it: `cli:alice`, `subscriber`, `smtp`."""
    kind, sep, ident = label.partition(":")
    if sep and kind in _KINDS:
        return kind, ident
    if label in _KINDS:
        return label, ""
    return "system", label
