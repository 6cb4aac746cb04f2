"""The signed links every message to a subscriber carries: unsubscribe, preferences, mailto, read."""

from __future__ import annotations

from urllib.parse import quote

from newsletter.config import Settings
from newsletter.mail.settings import MailSettings
from newsletter.tokens import Purpose, make_token


def recipient_links(settings: Settings | MailSettings, token_key: str) -> tuple[str, str, str]:
    """Unsubscribe URL, preferences URL and unsubscribe mailto for one subscriber."""
    secret = settings.secret
    unsubscribe = make_token(secret, Purpose.UNSUBSCRIBE, token_key)
    preferences = make_token(secret, Purpose.PREFERENCES, token_key)
    mailto = f"mailto:{settings.sender.address}?subject={quote('unsubscribe ' + unsubscribe)}"
    return (
        f"{settings.base_url}/unsubscribe/{unsubscribe}",
        f"{settings.base_url}/preferences/{preferences}",
        mailto,
    )


def read_token(settings: Settings | MailSettings, token_key: str) -> str:
    """The subscriber's own key to a subscribers-only archive (`?r=` on every web link)."""
    return make_token(settings.secret, Purpose.READ, token_key)


def connect_token(settings: Settings | MailSettings, token_key: str) -> str:
    """The subscriber's key to "connect me" (`/connect/<issue>/<item>/<token>`): one per reader,
    not per item, so a profile's digest is rendered once and the token spliced in."""
    return make_token(settings.secret, Purpose.CONNECT, token_key)
