"""The staff console: accounts, sessions and pages at /admin, on a listener of its own."""

from __future__ import annotations

from newsletter.console.app import create_admin_app

__all__ = ["create_admin_app"]
