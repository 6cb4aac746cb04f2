"""The console's guards: the IP allow-list, response headers, the client's address and scheme,
and CSRF tokens bound to a cookie nonce and to the session."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.errors import NewsletterError
from newsletter.web.limits import IpNetwork, client_address, trusted_networks

# CONSOLE.md section 1: nothing inline, nothing from another host.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
# The digest preview: a document of its own, framed by the preview page only. Its inline
# styles are the digest's (as the reader's mail client applies them); nothing else may load,
# and the frame's `sandbox` (no allow-scripts) keeps any script in an issue from running.
FRAME_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; "
    "frame-ancestors 'self'; base-uri 'none'"
)
FRAME_MARK = b"x-console-frame"
FRAME_HEADERS = [
    (b"content-security-policy", FRAME_CSP.encode()),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_NONCE = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class Network:
    """Who may reach the console, and which proxies may say who the client is."""

    allowed: tuple[IpNetwork, ...]
    proxies: tuple[IpNetwork, ...]

    @classmethod
    def of(cls, allow: Sequence[str], proxies: Sequence[str]) -> Network:
        return cls(trusted_networks(allow), trusted_networks(proxies))

    def client(self, scope: Scope) -> str | None:
        peer = scope.get("client")
        forwarded = [
            value.decode("latin-1")
            for name, value in scope.get("headers", [])
            if name == b"x-forwarded-for"
        ]
        return client_address(peer[0] if peer else None, forwarded, self.proxies)

    def allows(self, address: str | None) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.allowed)

    def https(self, request: Request) -> bool:
        """Whether the browser talks https to us (directly, or to a trusted proxy in front)."""
        if request.url.scheme == "https":
            return True
        peer = _ip(request.client.host if request.client else None)
        trusted = peer is not None and any(peer in network for network in self.proxies)
        return trusted and request.headers.get("x-forwarded-proto", "").lower() == "https"


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(address: str | None) -> bool:
    ip = _ip(address)
    return ip is not None and ip.is_loopback


class Guard:
    """Refuses clients outside the allow-list before any page; sets the headers on every answer."""

    def __init__(self, app: ASGIApp, network: Network) -> None:
        self.app = app
        self.network = network

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                framed = any(name == FRAME_MARK for name, _ in headers)
                kept = [h for h in headers if h[0] not in (b"cache-control", FRAME_MARK)]
                message = {**message, "headers": kept + (FRAME_HEADERS if framed else HEADERS)}
            await send(message)

        address = self.network.client(scope)
        if not self.network.allows(address):
            refusal = Response(
                "403 此地址不能访问管理后台 This address may not open the staff console\n",
                status_code=403, media_type="text/plain; charset=utf-8",
            )  # fmt: skip
            await refusal(scope, receive, with_headers)
            return
        scope.setdefault("state", {})["client_address"] = address
        await self.app(scope, receive, with_headers)


class CsrfError(NewsletterError, PermissionError):
    def __init__(self) -> None:
        super().__init__("the form has expired or did not come from the console; reload it")


@dataclass(frozen=True)
class Csrf:
    """Each form carries HMAC(form name, cookie nonce, session): a value made for one form,
    browser or session is refused on any other."""

    key: bytes

    @classmethod
    def of(cls, secret: bytes) -> Csrf:
        return cls(hmac.new(secret, b"newsletter console csrf", hashlib.sha256).digest())

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(32)

    @staticmethod
    def valid_nonce(nonce: str) -> bool:
        return bool(_NONCE.match(nonce))

    def token(self, form: str, nonce: str, session: str = "") -> str:
        message = f"{form}\x00{nonce}\x00{session}".encode()
        mac = hmac.new(self.key, message, hashlib.sha256).digest()[:24]
        return base64.urlsafe_b64encode(mac).decode()

    def check(
        self, request: Request, submitted: str, form: str, nonce: str, session: str, *, https: bool
    ) -> None:
        if not self.valid_nonce(nonce) or not hmac.compare_digest(
            submitted.encode(), self.token(form, nonce, session).encode()
        ):
            raise CsrfError
        origin = request.headers.get("origin")
        # A browser names the page's origin on a POST; "null" (no-referrer, a sandbox) leaves the
        # decision to the token. Our own origin is the request's: what the browser asked for.
        if origin and origin != "null" and origin.lower() != _own_origin(request, https):
            raise CsrfError


def _own_origin(request: Request, https: bool) -> str:
    return f"{'https' if https else request.url.scheme}://{request.url.netloc}".lower()
