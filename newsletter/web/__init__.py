"""The web pages: subscribe, confirm, unsubscribe (one click), preferences and the archive."""

from __future__ import annotations

from newsletter.web.app import create_app
from newsletter.web.limits import WebLimits

__all__ = ["WebLimits", "create_app"]
