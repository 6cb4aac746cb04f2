"""Staff roles and what each may do (CONSOLE.md section 2), as one table and pure functions.

A staff member holds grants: (role, mission scope), the scope an embassy code or `*` for all.
`can(grants, permission, mission)` answers one question; `scope(grants, permission)` gives the
`Scope` value every list, search, export and report query takes, so a liaison for de-berlin
sees Berlin's subscribers and nobody else's, whatever the page.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from newsletter.actors import Scope
from newsletter.errors import NewsletterError

ALL_MISSIONS = "*"


class StaffError(NewsletterError, ValueError):
    """A staff account cannot be added or changed as asked; the message says what to fix."""


class StaffStatus(StrEnum):
    INVITED = "invited"  # added, second factor not yet enrolled
    ACTIVE = "active"
    DISABLED = "disabled"


class Role(StrEnum):
    ADMIN = "admin"
    PUBLISHER = "publisher"
    EDITOR = "editor"
    LIST_MANAGER = "list-manager"
    LIAISON = "liaison"
    AUDITOR = "auditor"

    @property
    def label(self) -> str:
        """As the console shows it: 签发人 Publisher."""
        return ROLE_TITLES[self]


ROLE_TITLES: Mapping[Role, str] = {
    Role.ADMIN: "系统管理员 Administrator",
    Role.PUBLISHER: "签发人 Publisher",
    Role.EDITOR: "编辑 Editor",
    Role.LIST_MANAGER: "名单管理员 List manager",
    Role.LIAISON: "使馆联络员 Embassy liaison",
    Role.AUDITOR: "审计员 Auditor",
}


class Permission(StrEnum):
    READ_ISSUES = "issues.read"  # read issues, preview, explain
    EDIT_ISSUES = "issues.edit"  # import and edit issues
    TEST_SEND = "issues.test-send"
    REQUEST_CAMPAIGN = "campaigns.request"
    APPROVE_CAMPAIGN = "campaigns.approve"  # never one's own request
    CONTROL_CAMPAIGN = "campaigns.control"  # pause, resume, cancel, resend unknown
    REPORTS = "reports.read"  # per-recipient reports
    READ_SUBSCRIBERS = "subscribers.read"  # read and export
    EDIT_SUBSCRIBERS = "subscribers.edit"  # add, edit, import
    HANDOVER = "subscribers.handover"
    ERASE = "subscribers.erase"
    BOUNCES = "bounces"
    AUDIT = "audit.read"
    ADMINISTER = "settings"  # settings, staff, tokens, webhooks


class Access(StrEnum):
    """How far a role holds a permission; `can` asks for FULL."""

    NONE = "none"
    FULL = "full"  # within the grant's missions
    SELF = "self"  # a liaison's test send to their own address, their own audit rows
    REQUEST = "request"  # may ask for it (a liaison's handover), someone else does it


_F, _S, _R = Access.FULL, Access.SELF, Access.REQUEST
P = Permission
# The table of CONSOLE.md section 2; a missing cell is Access.NONE.
TABLE: Mapping[Role, Mapping[Permission, Access]] = {
    Role.ADMIN: dict.fromkeys(Permission, _F),
    Role.PUBLISHER: {
        P.READ_ISSUES: _F, P.EDIT_ISSUES: _F, P.TEST_SEND: _F, P.REQUEST_CAMPAIGN: _F,
        P.APPROVE_CAMPAIGN: _F, P.CONTROL_CAMPAIGN: _F, P.REPORTS: _F,
        P.READ_SUBSCRIBERS: _F, P.AUDIT: _F,
    },
    Role.EDITOR: {
        P.READ_ISSUES: _F, P.EDIT_ISSUES: _F, P.TEST_SEND: _F, P.REQUEST_CAMPAIGN: _F,
        P.REPORTS: _F,
    },
    Role.LIST_MANAGER: {
        P.READ_ISSUES: _F, P.REPORTS: _F, P.READ_SUBSCRIBERS: _F, P.EDIT_SUBSCRIBERS: _F,
        P.HANDOVER: _F, P.ERASE: _F, P.BOUNCES: _F, P.AUDIT: _F,
    },
    Role.LIAISON: {
        P.READ_ISSUES: _F, P.TEST_SEND: _S, P.REPORTS: _F, P.READ_SUBSCRIBERS: _F,
        P.EDIT_SUBSCRIBERS: _F, P.HANDOVER: _R, P.AUDIT: _S,
    },
    Role.AUDITOR: {P.READ_ISSUES: _F, P.REPORTS: _F, P.READ_SUBSCRIBERS: _F, P.AUDIT: _F},
}  # fmt: skip

# The order of strength when a person holds several grants.
_RANK = {Access.NONE: 0, Access.REQUEST: 1, Access.SELF: 2, Access.FULL: 3}


@dataclass(frozen=True)
class Grant:
    role: Role
    mission: str = ALL_MISSIONS  # an embassy code, or `*`

    @property
    def all_missions(self) -> bool:
        return self.mission == ALL_MISSIONS

    def covers(self, mission: str | None) -> bool:
        return self.all_missions or mission is None or mission == self.mission


def access(grants: Iterable[Grant], permission: Permission, mission: str | None = None) -> Access:
    """The strongest access any grant gives to `permission` (for `mission`, when named)."""
    best = Access.NONE
    for grant in grants:
        level = TABLE[grant.role].get(permission, Access.NONE)
        if grant.covers(mission) and _RANK[level] > _RANK[best]:
            best = level
    return best


def can(grants: Iterable[Grant], permission: Permission, mission: str | None = None) -> bool:
    """Whether the grants hold `permission` in full, for `mission` (None: for some mission)."""
    return access(grants, permission, mission) == Access.FULL


def scope(grants: Iterable[Grant], permission: Permission) -> Scope:
    """The missions the grants hold `permission` for: all, some, or none (an empty scope)."""
    codes: set[str] = set()
    for grant in grants:
        if TABLE[grant.role].get(permission, Access.NONE) == Access.NONE:
            continue
        if grant.all_missions:
            return Scope.all()
        codes.add(grant.mission)
    return Scope.of(codes)


def parse_role(name: str) -> Role:
    """A role by its name (`list-manager`, also `list_manager`), or an error with a suggestion."""
    wanted = name.strip().lower().replace("_", "-")
    try:
        return Role(wanted)
    except ValueError:
        pass
    names = [str(role) for role in Role]
    near = difflib.get_close_matches(wanted, names, n=1, cutoff=0.5)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise StaffError(f"unknown role {name!r}; {hint}roles: {', '.join(names)}")


def check_grants(role: Role, missions: Iterable[str]) -> tuple[Grant, ...]:
    """The grants `role` over `missions` makes (none given: all missions); a liaison needs one."""
    codes = tuple(dict.fromkeys(code.strip() for code in missions if code.strip()))
    if not codes or ALL_MISSIONS in codes:
        if role == Role.LIAISON:
            raise StaffError(
                "a liaison works for named missions: give --scope CODE (one or more), "
                "see `newsletter embassies list`"
            )
        return (Grant(role),)
    return tuple(Grant(role, code) for code in codes)
