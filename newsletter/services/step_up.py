"""Step-up: a fresh TOTP code on an open console session, before approve, send, resend unknown.

The code renews the session's `mfa_at` (what `Who.stepped_up` reads). A TOTP code only: a
recovery code is for a lost phone at login, not for signing off a send. Failures count with the
login failures of the same account (one throttle for every guess at its codes) and are audited.
"""

from __future__ import annotations

import datetime as dt

from newsletter import accounts, audit_log, credentials
from newsletter.actors import Actor
from newsletter.config import Settings
from newsletter.db import Engine
from newsletter.roles import StaffStatus
from newsletter.services import audit
from newsletter.services.logins import (
    FAILED,
    FAILURE_WINDOW,
    FAILURES_PER_ACCOUNT,
    Client,
    Outcome,
)
from newsletter.services.units import unit_of_work


def step_up(
    settings: Settings, token: str, code: str, client: Client, *, now: dt.datetime,
    db: Engine | None = None,
) -> Outcome:  # fmt: skip
    """OK renews the session's second factor; REFUSED a wrong or used code; THROTTLED."""
    with unit_of_work(settings, db) as session:
        row = accounts.find_session(session, credentials.token_hash(token)) if token else None
        if row is None or row.revoked_at is not None or row.mfa_at is None:
            return Outcome.REFUSED
        user = accounts.by_id(session, row.staff_id)
        if user is None or user.status != StaffStatus.ACTIVE:
            return Outcome.REFUSED
        target = f"staff:{user.email}"
        actor = Actor.staff(user.email)
        since = now - FAILURE_WINDOW
        if audit_log.count_since(session, FAILED, since, target=target) >= FAILURES_PER_ACCOUNT:
            return Outcome.THROTTLED
        secret = credentials.unseal(settings.secret, user.totp_secret)
        step = credentials.totp_step(secret, code, now, user.totp_step)
        if step is None:
            audit.record(session, actor, FAILED, target=target, ip=client.ip, at=now,
                         detail={"step": "step-up", "why": "wrong code"})  # fmt: skip
            return Outcome.REFUSED
        user.totp_step = step
        accounts.save(session, user)
        row.mfa_at = now
        session.add(row)
        audit.record(session, actor, "staff.step-up", target=target, ip=client.ip, at=now)
        return Outcome.OK
