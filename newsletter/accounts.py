"""Staff rows: accounts, their grants and their console sessions (storage: flushes, never commits)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from sqlmodel import Session, col, select, update

from newsletter.models import Embassy, StaffGrant, StaffSession, StaffUser, utcnow
from newsletter.roles import Grant, Role


def by_email(session: Session, email: str) -> StaffUser | None:
    return session.exec(select(StaffUser).where(StaffUser.email == email)).first()


def by_id(session: Session, staff_id: int) -> StaffUser | None:
    return session.get(StaffUser, staff_id)


def everyone(session: Session) -> Sequence[StaffUser]:
    return session.exec(select(StaffUser).order_by(col(StaffUser.email))).all()


def add(session: Session, user: StaffUser, grants: Iterable[Grant]) -> StaffUser:
    session.add(user)
    session.flush()
    assert user.id is not None
    set_grants(session, user.id, grants)
    return user


def save(session: Session, user: StaffUser) -> None:
    user.updated_at = utcnow()
    session.add(user)
    session.flush()


def grants_of(session: Session, staff_id: int) -> tuple[Grant, ...]:
    query = select(StaffGrant).where(StaffGrant.staff_id == staff_id)
    rows = session.exec(query.order_by(col(StaffGrant.role), col(StaffGrant.mission))).all()
    return tuple(Grant(Role(row.role), row.mission) for row in rows)


def grants_by_staff(session: Session) -> dict[int, tuple[Grant, ...]]:
    found: dict[int, list[Grant]] = {}
    query = select(StaffGrant).order_by(col(StaffGrant.role), col(StaffGrant.mission))
    for row in session.exec(query):
        found.setdefault(row.staff_id, []).append(Grant(Role(row.role), row.mission))
    return {staff_id: tuple(grants) for staff_id, grants in found.items()}


def set_grants(session: Session, staff_id: int, grants: Iterable[Grant]) -> None:
    """Replace every grant of one staff member with `grants`."""
    for row in session.exec(select(StaffGrant).where(StaffGrant.staff_id == staff_id)):
        session.delete(row)
    session.flush()
    for grant in dict.fromkeys(grants):
        session.add(StaffGrant(staff_id=staff_id, role=str(grant.role), mission=grant.mission))
    session.flush()


def mission_codes(session: Session) -> list[str]:
    return list(session.exec(select(Embassy.code).order_by(col(Embassy.code))).all())


# --- Sessions -----------------------------------------------------------------------------------


def open_session(
    session: Session, staff_id: int, token_hash: str, *, ip: str, user_agent: str, at: dt.datetime
) -> StaffSession:
    row = StaffSession(
        id=token_hash, staff_id=staff_id, created_at=at, last_seen_at=at, ip=ip[:45],
        user_agent=user_agent[:300],
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def find_session(session: Session, token_hash: str) -> StaffSession | None:
    return session.get(StaffSession, token_hash)


def revoke(session: Session, row: StaffSession, at: dt.datetime) -> None:
    if row.revoked_at is None:
        row.revoked_at = at
        session.add(row)
        session.flush()


def revoke_all(session: Session, staff_id: int, at: dt.datetime) -> None:
    """End every open session of one staff member (on disable, role or 2FA change)."""
    session.execute(
        update(StaffSession)
        .where(col(StaffSession.staff_id) == staff_id, col(StaffSession.revoked_at).is_(None))
        .values(revoked_at=at)
    )
    session.flush()
