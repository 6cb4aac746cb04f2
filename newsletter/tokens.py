"""Signed links (HMAC-SHA256 with the instance secret): confirm, unsubscribe and preferences."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum

from newsletter.errors import NewsletterError

CONFIRM_LIFETIME = dt.timedelta(days=7)


class Purpose(StrEnum):
    CONFIRM = "c"
    UNSUBSCRIBE = "u"
    PREFERENCES = "p"
    READ = "r"  # the subscribers-only archive: does not expire, bound to the subscriber
    CONNECT = "k"  # "connect me" on a demand item (the item is in the URL): bound to the key


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


@dataclass(frozen=True)
class Claim:
    """What a valid token says: whose it is and, for a confirmation, until when it holds."""

    token_key: str
    expires: dt.datetime | None

    @property
    def issued(self) -> dt.datetime | None:
        return self.expires - CONFIRM_LIFETIME if self.expires else None


def read_claim(secret: bytes, token: str, purpose: Purpose, *, now: dt.datetime) -> Claim:
    """The claim of a valid token; `InvalidToken` for anything else."""
    try:
        payload_part, mac_part = token.split(".")
        payload, mac = _unb64(payload_part), _unb64(mac_part)
        if not hmac.compare_digest(mac, _mac(secret, payload)):
            raise InvalidToken
        kind, token_key, stamp = payload.decode().split(".")
        expires = int(stamp)
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken from None
    if kind != purpose.value or not token_key:
        raise InvalidToken
    if expires and expires < now.timestamp():
        raise InvalidToken
    return Claim(token_key, dt.datetime.fromtimestamp(expires, dt.UTC) if expires else None)


def read_token(secret: bytes, token: str, purpose: Purpose, *, now: dt.datetime) -> str:
    """The `token_key` a valid token names; `InvalidToken` for anything else."""
    return read_claim(secret, token, purpose, now=now).token_key


def confirm_token(secret: bytes, token_key: str, *, now: dt.datetime) -> str:
    """A confirmation token that expires CONFIRM_LIFETIME after `now`."""
    return make_token(secret, Purpose.CONFIRM, token_key, expires=now + CONFIRM_LIFETIME)
