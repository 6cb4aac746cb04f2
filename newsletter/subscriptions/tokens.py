"""Signed links (HMAC-SHA256 with the instance secret): confirm, unsubscribe and preferences."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from enum import StrEnum

from newsletter.errors import NewsletterError

CONFIRM_LIFETIME = dt.timedelta(days=7)


class Purpose(StrEnum):
    CONFIRM = "c"
    UNSUBSCRIBE = "u"
    PREFERENCES = "p"


class InvalidToken(NewsletterError, ValueError):
    """A link that is forged, altered, expired or meant for something else.

    One generic message for every cause, so a refusal tells a prober nothing.
    """

    def __init__(self) -> None:
        super().__init__("this link is not valid or has expired")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, b"newsletter-link\x00" + payload, hashlib.sha256).digest()[:18]


def make_token(
    secret: bytes, purpose: Purpose, token_key: str, *, expires: dt.datetime | None = None
) -> str:
    """A URL-safe token binding `purpose` to the subscriber's `token_key`."""
    stamp = int(expires.timestamp()) if expires else 0
    payload = f"{purpose.value}.{token_key}.{stamp}".encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def read_token(secret: bytes, token: str, purpose: Purpose, *, now: dt.datetime) -> str:
    """The `token_key` a valid token names; `InvalidToken` for anything else."""
    try:
        payload_part, mac_part = token.split(".")
        payload, mac = _unb64(payload_part), _unb64(mac_part)
        if not hmac.compare_digest(mac, _mac(secret, payload)):
            raise InvalidToken
        kind, token_key, stamp = payload.decode().split(".")
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken from None
    if kind != purpose.value or not token_key:
        raise InvalidToken
    if stamp != "0" and int(stamp) < now.timestamp():
        raise InvalidToken
    return token_key
