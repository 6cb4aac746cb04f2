"""Console logins: password, then a second factor, then a server-side session; logout.

A login is two steps. The password opens a *pending* session (no `mfa_at`), good only for the
code form; a TOTP or recovery code then replaces it with a new session id (so a token seen
before the second factor is worth nothing after it). An invited account enrols its TOTP secret
at that step. Failures are throttled per account and per client address, counted from the audit
chain itself (so every process shares the count), and each failure is audited.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from newsletter import accounts, addresses, audit_log, credentials, roles
from newsletter.actors import Actor, Scope
from newsletter.config import Settings
from newsletter.db import Engine, Session
from newsletter.models import StaffSession, StaffUser
from newsletter.roles import Grant, Permission, StaffStatus
from newsletter.services import audit
from newsletter.services.units import unit_of_work

FAILED = "staff.login-failed"
FAILURES_PER_ACCOUNT = 5
FAILURES_PER_ADDRESS = 20
FAILURE_WINDOW = dt.timedelta(minutes=15)
# A pending session (password given, no code yet) lasts this long.
PENDING_FOR = dt.timedelta(minutes=5)
# A second factor older than this is asked for again before a step-up action (CONSOLE section 2).
STEP_UP_FOR = dt.timedelta(minutes=10)
# last_seen_at is written at most this often: a page view is not worth a write each time.
SEEN_EVERY = dt.timedelta(seconds=60)


class Outcome(StrEnum):
    OK = "ok"
    REFUSED = "refused"  # wrong address, password or code: one answer for all three
    THROTTLED = "throttled"


@dataclass(frozen=True)
class Step:
    outcome: Outcome
    token: str = ""  # the new session's cookie value when OK


@dataclass(frozen=True)
class Client:
    ip: str
    user_agent: str = ""


@dataclass(frozen=True)
class Pending:
    """A password-checked login waiting for its code; `enrol_uri` set while enrolling."""

    email: str
    enrol_uri: str | None


@dataclass(frozen=True)
class Who:
    """The staff member behind a console session."""

    email: str
    name: str
    grants: tuple[Grant, ...]
    session_id: str  # the session's hash: what the CSRF tokens are bound to
    mfa_at: dt.datetime
    locale: str = "zh"  # the console language they chose (CONSOLE section 1.5)

    @property
    def actor(self) -> Actor:
        return Actor.staff(self.email)

    def can(self, permission: Permission, mission: str | None = None) -> bool:
        return roles.can(self.grants, permission, mission)

    def scope(self, permission: Permission) -> Scope:
        """What every list, search, export and report query of a page takes."""
        return roles.scope(self.grants, permission)

    def stepped_up(self, now: dt.datetime) -> bool:
        """Whether the second factor is fresh enough for approve, send, erase, roles, settings;
        if not, the page asks for a code again first."""
        return now - self.mfa_at < STEP_UP_FOR


@dataclass(frozen=True)
class Lifetimes:
    idle: dt.timedelta
    absolute: dt.timedelta

    @classmethod
    def of(cls, settings: Settings) -> Lifetimes:
        admin = settings.admin
        return cls(
            dt.timedelta(minutes=admin.session_idle_minutes),
            dt.timedelta(hours=admin.session_absolute_hours),
        )


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _target(email: str) -> str:
    return f"staff:{email}"


def _address(email: str) -> str:
    try:
        return addresses.normalise(email)
    except addresses.AddressError:
        return email.strip().lower()[:320]


def _throttled(session: Session, email: str, client: Client, now: dt.datetime) -> bool:
    since = now - FAILURE_WINDOW
    by_account = audit_log.count_since(session, FAILED, since, target=_target(email))
    by_address = audit_log.count_since(session, FAILED, since, ip=client.ip) if client.ip else 0
    return by_account >= FAILURES_PER_ACCOUNT or by_address >= FAILURES_PER_ADDRESS


def _fail(
    session: Session, email: str, client: Client, now: dt.datetime, step: str, why: str
) -> None:
    audit.record(
        session, Actor.staff(email), FAILED, target=_target(email),
        detail={"step": step, "why": why}, ip=client.ip, at=now,
    )  # fmt: skip


def begin(
    settings: Settings, email: str, password: str, client: Client, *, now: dt.datetime,
    db: Engine | None = None,
) -> Step:  # fmt: skip
    """Check the password; OK opens a pending session for the code step."""
    address = _address(email)
    with unit_of_work(settings, db) as session:
        if _throttled(session, address, client, now):
            audit.record(
                session, Actor.staff(address), "staff.login-throttled", target=_target(address),
                detail={"step": "password"}, ip=client.ip, at=now,
            )  # fmt: skip
            return Step(Outcome.THROTTLED)
        user = accounts.by_email(session, address)
        matches = credentials.verify_password(user.password_hash if user else None, password)
        if user is None or not matches or user.status == StaffStatus.DISABLED:
            why = (
                "no such account"
                if user is None
                else "wrong password"
                if not matches
                else "disabled"
            )
            _fail(session, address, client, now, "password", why)
            return Step(Outcome.REFUSED)
        assert user.id is not None
        token, hashed = credentials.new_token()
        accounts.open_session(
            session, user.id, hashed, ip=client.ip, user_agent=client.user_agent, at=now
        )
        return Step(Outcome.OK, token)


def _pending_row(
    session: Session, token: str, now: dt.datetime
) -> tuple[StaffSession, StaffUser] | None:
    row = accounts.find_session(session, credentials.token_hash(token)) if token else None
    if row is None or row.revoked_at is not None or row.mfa_at is not None:
        return None
    if now - _aware(row.created_at) > PENDING_FOR:
        return None
    user = accounts.by_id(session, row.staff_id)
    if user is None or user.status == StaffStatus.DISABLED:
        return None
    return row, user


def pending(
    settings: Settings, token: str, *, now: dt.datetime, db: Engine | None = None
) -> Pending | None:
    """The login waiting for its code, if this token is one; the enrolment URI while invited."""
    with unit_of_work(settings, db, commit=False) as session:
        found = _pending_row(session, token, now)
        if found is None:
            return None
        _row, user = found
        if user.status != StaffStatus.INVITED:
            return Pending(user.email, None)
        secret = credentials.unseal(settings.secret, user.totp_secret)
        return Pending(user.email, credentials.otpauth_uri(secret, user.email))


def _second_factor(settings: Settings, user: StaffUser, code: str, now: dt.datetime) -> str | None:
    """What the code was ("totp", "recovery"), consuming it; None when it is neither."""
    secret = credentials.unseal(settings.secret, user.totp_secret)
    step = credentials.totp_step(secret, code, now, user.totp_step)
    if step is not None:
        user.totp_step = step
        return "totp"
    if user.status == StaffStatus.INVITED:
        return None  # enrolment proves the authenticator app works: a TOTP code only
    hashed = credentials.hash_code(settings.secret, code)
    if hashed in user.recovery_codes:
        user.recovery_codes = [c for c in user.recovery_codes if c != hashed]
        return "recovery"
    return None


def finish(
    settings: Settings, token: str, code: str, client: Client, *, now: dt.datetime,
    db: Engine | None = None,
) -> Step:  # fmt: skip
    """Check the code of a pending login; OK replaces it with a full session (a new token)."""
    with unit_of_work(settings, db) as session:
        found = _pending_row(session, token, now)
        if found is None:
            return Step(Outcome.REFUSED)
        row, user = found
        if _throttled(session, user.email, client, now):
            accounts.revoke(session, row, now)
            audit.record(
                session, Actor.staff(user.email), "staff.login-throttled",
                target=_target(user.email), detail={"step": "code"}, ip=client.ip, at=now,
            )  # fmt: skip
            return Step(Outcome.THROTTLED)
        kind = _second_factor(settings, user, code, now)
        if kind is None:
            _fail(session, user.email, client, now, "code", "wrong code")
            return Step(Outcome.REFUSED)
        assert user.id is not None
        accounts.revoke(session, row, now)
        new_token, hashed = credentials.new_token()
        full = accounts.open_session(
            session, user.id, hashed, ip=client.ip, user_agent=client.user_agent, at=now
        )
        full.mfa_at = now
        enrolled = user.status == StaffStatus.INVITED
        user.status = StaffStatus.ACTIVE
        user.last_login_at = now
        accounts.save(session, user)
        detail: dict[str, object] = {"factor": kind}
        if enrolled:
            detail["enrolled"] = True
        if kind == "recovery":
            detail["recovery_codes_left"] = len(user.recovery_codes)
        audit.record(
            session, Actor.staff(user.email), "staff.login", target=_target(user.email),
            detail=detail, ip=client.ip, at=now,
        )  # fmt: skip
        return Step(Outcome.OK, new_token)


def who(
    settings: Settings, token: str, *, now: dt.datetime, db: Engine | None = None
) -> Who | None:
    """The staff member of a full session still open (idle and absolute limits), or None."""
    if not token:
        return None
    limits = Lifetimes.of(settings)
    with unit_of_work(settings, db) as session:
        row = accounts.find_session(session, credentials.token_hash(token))
        if row is None or row.revoked_at is not None or row.mfa_at is None:
            return None
        seen = _aware(row.last_seen_at)
        if now - seen >= limits.idle or now - _aware(row.created_at) >= limits.absolute:
            return None
        user = accounts.by_id(session, row.staff_id)
        if user is None or user.status != StaffStatus.ACTIVE:
            return None
        if now - seen >= SEEN_EVERY:
            row.last_seen_at = now
            session.add(row)
        return Who(
            user.email, user.name, accounts.grants_of(session, row.staff_id), row.id,
            _aware(row.mfa_at), user.locale,
        )  # fmt: skip


def logout(
    settings: Settings, token: str, client: Client, *, now: dt.datetime, db: Engine | None = None
) -> None:
    with unit_of_work(settings, db) as session:
        row = accounts.find_session(session, credentials.token_hash(token)) if token else None
        if row is None or row.revoked_at is not None:
            return
        accounts.revoke(session, row, now)
        user = accounts.by_id(session, row.staff_id)
        if user is not None and row.mfa_at is not None:
            audit.record(
                session, Actor.staff(user.email), "staff.logout", target=_target(user.email),
                ip=client.ip, at=now,
            )  # fmt: skip
