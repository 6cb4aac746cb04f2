"""Who acts (`Actor`) and over which missions (`Scope`): plain values every service takes."""

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
    """Who made a change and through what door; what the audit trail records."""

    kind: ActorKind
    name: str  # staff e-mail, token prefix, subscriber address, "scheduler", OS user
    via: str  # cli, console, api, link, one-click, web, smtp, bounce

    @classmethod
    def cli(cls) -> Actor:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            user = "unknown"
        return cls(ActorKind.CLI, user, "cli")

    @classmethod
    def system(cls, name: str, via: str) -> Actor:
        return cls(ActorKind.SYSTEM, name, via)

    @property
    def label(self) -> str:
        """As the audit trail shows it: `cli:alice`, `staff:li.wei@example.org`, `system:smtp`."""
        return f"{self.kind}:{self.name}"


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
