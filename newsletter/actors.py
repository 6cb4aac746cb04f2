"""Who acts (`Actor`) and over which missions (`Scope`): plain values every layer may hold.

Defined below the services (which re-export them) so the subscription lifecycle can write an
`Actor` into the audit trail without importing the layer above it.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class ActorKind(StrEnum):
    STAFF = "staff"  # a staff account in the console
    TOKEN = "token"  # an API token (its owner's rights, never more)
    SUBSCRIBER = "subscriber"  # a signed link or the public form
    SYSTEM = "system"  # the scheduler, the sender, bounce processing
    CLI = "cli"  # a shell on the server, as the operating-system user


@dataclass(frozen=True)
class Actor:
    """Who made a change and through what door; what the audit trail records.

    `Actor("subscriber", "link")` is a subscriber through a signed link: the audit row already
    names the person, and their address must not outlive an erasure in the `actor` column.
    """

    kind: ActorKind | str
    via: str  # cli, console, api, link, one-click, web, smtp, bounce, import
    name: str = ""  # staff e-mail, token prefix, "smtp", "scheduler", OS user

    @classmethod
    def cli(cls, via: str = "cli") -> Actor:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            user = "unknown"
        return cls(ActorKind.CLI, via, user)

    @classmethod
    def system(cls, name: str, via: str) -> Actor:
        return cls(ActorKind.SYSTEM, via, name)

    @classmethod
    def staff(cls, email: str, via: str = "console") -> Actor:
        return cls(ActorKind.STAFF, via, email)

    @classmethod
    def subscriber(cls, via: str) -> Actor:
        return cls(ActorKind.SUBSCRIBER, via)

    @property
    def label(self) -> str:
        """As the audit trail shows it: `cli:alice`, `staff:li.wei@example.org`, `subscriber`.

        A system actor shows by its name alone (`smtp`, `dsn`, `scheduler`): the audit trail
        has always recorded them so, and old and new rows must read alike.
        """
        if self.kind == ActorKind.SYSTEM and self.name:
            return self.name
        return f"{self.kind}:{self.name}" if self.name else str(self.kind)


@dataclass(frozen=True)
class Scope:
    """The missions whose people an actor may see and change; `missions=None` is all of them."""

    missions: frozenset[str] | None = None

    @classmethod
    def all(cls) -> Scope:
        return cls(None)

    @classmethod
    def of(cls, codes: Iterable[str]) -> Scope:
        return cls(frozenset(codes))

    def allows(self, mission: str) -> bool:
        return self.missions is None or mission in self.missions
