"""Subscribe-form limits kept in the database, and the client address they count against.

In the database because `serve` may run as several processes (or beside `run --web`): limits
in one process's memory let each of N processes take the full allowance. Fixed windows with
the previous one weighted by how much of it still overlaps the last `window` seconds (a
sliding window, approximated with two counters per key), so a burst across a window boundary
gets no double allowance.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass

from newsletter.config import Settings, WebSettings
from newsletter.db import Engine
from newsletter.rate_counts import count_hit

_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: Sequence[str]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IpNetwork]
) -> str | None:
    """The address a request counts against: the peer, unless it is a trusted proxy.

    X-Forwarded-For is read from the right (each proxy appends the address it saw) while the
    hop is itself a trusted proxy; the first hop that is not is the client. Entries to its left
    were written by the client and prove nothing.
    """
    if peer is None:
        return None
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    current = peer
    while hops:
        ip = _ip(current)
        if ip is None or not any(ip in network for network in trusted):
            break
        nxt = hops.pop()
        if _ip(nxt) is None:
            break  # garbage from the client side: count it against the proxy's neighbour
        current = nxt
    return current


@dataclass(frozen=True)
class WebLimits:
    """Subscribe-form limits, counted in the database before any write or mail.

    No defaults of its own: the values come from `[web]` (`WebSettings` holds the defaults).
    """

    subscribe_per_ip: int
    subscribe_per_address: int
    window_seconds: float
    trusted_proxies: tuple[str, ...]

    @classmethod
    def of(cls, web: WebSettings) -> WebLimits:
        return cls(
            web.subscribe_per_ip, web.subscribe_per_address, web.window_seconds,
            tuple(web.trusted_proxies),
        )  # fmt: skip

    @classmethod
    def from_settings(cls, settings: Settings) -> WebLimits:
        return cls.of(settings.web)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # seconds, when not allowed


class SharedLimit:
    """At most `limit` hits per `window` seconds for each key, counted in the database."""

    def __init__(
        self, engine: Engine, secret: bytes, *, scope: str, limit: int, window: float
    ) -> None:
        self.engine = engine
        self.secret = secret
        self.scope = scope
        self.limit = limit
        self.window = window

    def _key(self, key: str) -> str:
        mac = hmac.new(self.secret, f"rate\x00{self.scope}\x00{key}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def hit(self, key: str, now: dt.datetime) -> Verdict:
        """Count one hit; refused (and not counted) when the key is over its limit."""
        elapsed = (now - _EPOCH).total_seconds() / self.window
        number = math.floor(elapsed)
        through = elapsed - number  # how far into the current window

        def fits(previous: int, current: int) -> bool:
            return previous * (1 - through) + current <= self.limit

        kept, previous, current = count_hit(self.engine, self.scope, self._key(key), number, fits)
        if kept:
            return Verdict(True)
        return Verdict(False, self._retry_after(previous, current - 1, through))

    def _retry_after(self, previous: int, current: int, through: float) -> int:
        """Seconds until one more hit fits, as the previous window's weight runs out."""
        room = self.limit - 1 - current
        if room >= 0 and previous > 0:
            # previous * (1 - t) + current + 1 <= limit, later in this window.
            wait = max(0.0, 1 - room / previous - through)
        else:
            # Only in the next window, where this window's hits are the weighted ones.
            later = max(0.0, 1 - (self.limit - 1) / current) if current > 0 else 0.0
            wait = (1 - through) + later
        return max(1, math.ceil(wait * self.window))


def client_key(host: str | None) -> str:
    """The unit an IP limit counts: one IPv4 address, or one IPv6 /64 (one customer's network)."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)
