"""The error families every layer raises; the CLI and web map them to exit codes and statuses."""

from __future__ import annotations


class NewsletterError(Exception):
    """Base of every error a staff member can act on; the message says what to fix."""


class ConfigError(NewsletterError, ValueError):
    """The configuration is missing a value or holds one that cannot work."""


class ContentError(NewsletterError, ValueError):
    """An issue file or issue text is not valid; the message names where."""


class ListImportError(NewsletterError, ValueError):
    """A subscriber list cannot be imported as given."""


class TemplateError(NewsletterError, RuntimeError):
    """An email or page template failed to render."""


class DeliveryError(NewsletterError, RuntimeError):
    """Sending cannot proceed (transport, authentication or configuration fault)."""


class NotFoundError(NewsletterError, LookupError):
    """A named thing (issue, subscriber, embassy, campaign) does not exist."""

    def __init__(self, kind: str, key: str, hint: str = "") -> None:
        self.kind = kind
        self.key = key
        message = f"{kind} {key!r} not found"
        super().__init__(f"{message}; {hint}" if hint else message)
