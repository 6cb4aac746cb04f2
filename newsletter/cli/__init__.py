"""The `newsletter` command line: parse, call the core, print. Exit 0 ok, 1 user error, 2 usage."""

from __future__ import annotations

from newsletter.cli import (  # noqa: F401
    admin,
    approvals,
    audit,
    bounces,
    calendar,
    campaigns,
    check,
    issues,
    reference,
    schedule,
    sending,
    setup,
    staff,
    subscribers,
    web,
)
from newsletter.cli.base import app

__all__ = ["app", "main"]


def main() -> None:
    app()
