"""Staff accounts: add, list, grant, disable, reset the second factor.

Every check runs before the first write, and each call is one transaction: a refused account
leaves nothing behind. Each change is written to the audit chain with the `Actor` who made it,
and a change of role, status or second factor ends the person's open console sessions.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from newsletter import accounts, addresses, credentials
from newsletter.actors import Actor
from newsletter.config import Settings
from newsletter.db import Engine, Session
from newsletter.errors import NotFoundError
from newsletter.models import StaffUser, utcnow
from newsletter.roles import Grant, StaffError, StaffStatus, check_grants, parse_role
from newsletter.services import audit
from newsletter.services.units import unit_of_work


@dataclass(frozen=True)
class StaffView:
    email: str
    name: str
    status: str
    grants: tuple[Grant, ...]
    created_at: dt.datetime
    last_login_at: dt.datetime | None

    @property
    def roles(self) -> list[str]:
        return list(dict.fromkeys(str(g.role) for g in self.grants))

    @property
    def scope(self) -> list[str]:
        return list(dict.fromkeys(g.mission for g in self.grants))

    def as_json(self) -> dict[str, object]:
        return {
            "email": self.email, "name": self.name, "status": self.status,
            "role": self.roles[0] if len(self.roles) == 1 else self.roles, "scope": self.scope,
            "created_at": self.created_at.isoformat(),
            "last_login_at": self.last_login_at.isoformat() if self.last_login_at else None,
        }  # fmt: skip


@dataclass(frozen=True)
class Enrolled:
    """What `staff add` and `staff reset-2fa` show once: the second factor to enrol."""

    email: str
    grants: tuple[Grant, ...]
    enrolment: credentials.Enrolment

    def as_json(self) -> dict[str, object]:
        return {
            "email": self.email, "role": str(self.grants[0].role),
            "scope": [g.mission for g in self.grants],
            "totp_secret": self.enrolment.totp_secret,
            "otpauth_uri": self.enrolment.otpauth_uri,
            "recovery_codes": list(self.enrolment.recovery_codes),
        }  # fmt: skip


def _address(email: str) -> str:
    try:
        return addresses.normalise(email)
    except addresses.AddressError as exc:
        raise StaffError(f"{email!r} is not a usable e-mail address: {exc.reason}") from None


def _grants(session: Session, role: str, missions: Sequence[str]) -> tuple[Grant, ...]:
    grants = check_grants(parse_role(role), missions)
    known = accounts.mission_codes(session)
    for grant in grants:
        if not grant.all_missions and grant.mission not in known:
            near = difflib.get_close_matches(grant.mission, known, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise StaffError(
                f"unknown mission {grant.mission!r}; {hint}see `newsletter embassies list`"
            )
    return grants


def _user(session: Session, email: str) -> StaffUser:
    user = accounts.by_email(session, _address(email))
    if user is None:
        raise NotFoundError("staff member", email, "see `newsletter staff list`")
    return user


def _view(session: Session, user: StaffUser) -> StaffView:
    assert user.id is not None
    return StaffView(
        user.email, user.name, user.status, accounts.grants_of(session, user.id),
        user.created_at, user.last_login_at,
    )  # fmt: skip


def _enrol(settings: Settings, user: StaffUser) -> credentials.Enrolment:
    enrolment = credentials.new_enrolment(user.email)
    user.totp_secret = credentials.seal(settings.secret, enrolment.totp_secret)
    user.totp_step = 0
    user.recovery_codes = [
        credentials.hash_code(settings.secret, c) for c in enrolment.recovery_codes
    ]
    return enrolment


def add_staff(
    settings: Settings,
    email: str,
    *,
    role: str,
    scope: Sequence[str] = (),
    name: str = "",
    password: str,
    actor: Actor,
    db: Engine | None = None,
) -> Enrolled:
    """A new account, invited until its second factor is enrolled at the first login."""
    address = _address(email)
    parse_role(role)  # an unknown role is named before anything about the password
    credentials.check_password(password, address)
    settings.secret  # noqa: B018 - the TOTP secret is sealed with it: fail before any write
    with unit_of_work(settings, db) as session:
        grants = _grants(session, role, scope)
        if accounts.by_email(session, address) is not None:
            raise StaffError(f"{address} already has an account; see `newsletter staff list`")
        user = StaffUser(
            email=address, name=name.strip(), password_hash=credentials.hash_password(password),
            status=StaffStatus.INVITED,
        )  # fmt: skip
        enrolment = _enrol(settings, user)
        accounts.add(session, user, grants)
        audit.record(
            session, actor, "staff.add", target=f"staff:{address}",
            detail={"grants": [f"{g.role}@{g.mission}" for g in grants]},
        )  # fmt: skip
        return Enrolled(address, grants, enrolment)


def list_staff(settings: Settings, *, db: Engine | None = None) -> list[StaffView]:
    with unit_of_work(settings, db, commit=False) as session:
        grants = accounts.grants_by_staff(session)
        return [
            StaffView(
                u.email, u.name, u.status, grants.get(u.id or 0, ()), u.created_at,
                u.last_login_at,
            )
            for u in accounts.everyone(session)
        ]  # fmt: skip


def grant(
    settings: Settings,
    email: str,
    *,
    role: str,
    scope: Sequence[str] = (),
    actor: Actor,
    db: Engine | None = None,
) -> StaffView:
    """Give the staff member `role` over `scope` instead of the grants they had."""
    with unit_of_work(settings, db) as session:
        user = _user(session, email)
        grants = _grants(session, role, scope)
        assert user.id is not None
        before = accounts.grants_of(session, user.id)
        accounts.set_grants(session, user.id, grants)
        accounts.revoke_all(session, user.id, utcnow())
        accounts.save(session, user)
        audit.record(
            session, actor, "staff.grant", target=f"staff:{user.email}",
            detail={
                "before": [f"{g.role}@{g.mission}" for g in before],
                "after": [f"{g.role}@{g.mission}" for g in grants],
            },
        )  # fmt: skip
        return _view(session, user)


def disable(settings: Settings, email: str, *, actor: Actor, db: Engine | None = None) -> StaffView:
    """No more logins; open sessions end now. The account and its history stay."""
    with unit_of_work(settings, db) as session:
        user = _user(session, email)
        assert user.id is not None
        if user.status != StaffStatus.DISABLED:
            before = user.status
            user.status = StaffStatus.DISABLED
            accounts.save(session, user)
            audit.record(
                session, actor, "staff.disable", target=f"staff:{user.email}",
                detail={"before": before},
            )  # fmt: skip
        accounts.revoke_all(session, user.id, utcnow())
        return _view(session, user)


def reset_2fa(
    settings: Settings, email: str, *, actor: Actor, db: Engine | None = None
) -> Enrolled:
    """A new TOTP secret and recovery codes; the person enrols again at their next login."""
    settings.secret  # noqa: B018
    with unit_of_work(settings, db) as session:
        user = _user(session, email)
        if user.status == StaffStatus.DISABLED:
            raise StaffError(f"{user.email} is disabled; its second factor stays as it is")
        assert user.id is not None
        enrolment = _enrol(settings, user)
        user.status = StaffStatus.INVITED
        accounts.save(session, user)
        accounts.revoke_all(session, user.id, utcnow())
        audit.record(session, actor, "staff.reset-2fa", target=f"staff:{user.email}")
        return Enrolled(user.email, accounts.grants_of(session, user.id), enrolment)


LOCALES = ("zh", "en")  # the console's languages: Chinese first, English on the toggle


def set_locale(
    settings: Settings,
    email: str,
    locale: str,
    *,
    actor: Actor,
    ip: str = "",
    db: Engine | None = None,
) -> StaffView:
    """The console language `email` sees from now on, kept on their account across logins."""
    if locale not in LOCALES:
        raise StaffError(f"unknown console language {locale!r}: choose one of {', '.join(LOCALES)}")
    with unit_of_work(settings, db) as session:
        user = _user(session, email)
        if user.locale != locale:
            before = user.locale
            user.locale = locale
            accounts.save(session, user)
            audit.record(
                session, actor, "staff.locale", target=f"staff:{user.email}",
                detail={"before": before, "after": locale}, ip=ip,
            )  # fmt: skip
        return _view(session, user)
