"""Request safety for the pages: CSRF tokens (signed double submit) and response headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.errors import NewsletterError

_NONCE = re.compile(r"^[A-Za-z0-9_-]{43}$")
# Inline <style> only; no script, no frames, forms post only back here.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class CsrfError(NewsletterError, PermissionError):
    def __init__(self) -> None:
        super().__init__(
            "the form has expired or did not come from this site; reload and send it again"
        )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True)
class CsrfGuard:
    """A random nonce in a cookie, and in each form the HMAC of (form name, nonce).

    Without the instance secret nobody can make the form value for a nonce, and the form name
    keeps a value made for one form from being replayed on another.
    """

    secret: bytes
    base_url: str

    @property
    def secure(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def cookie(self) -> str:
        # The __Host- prefix pins the cookie to this host and path /, but browsers accept it
        # only over https.
        return "__Host-nl_csrf" if self.secure else "nl_csrf"

    def nonce(self, request: Request) -> tuple[str, bool]:
        """The request's nonce, or a new one (True: it has to be set as a cookie)."""
        current = request.cookies.get(self.cookie, "")
        if _NONCE.match(current):
            return current, False
        return secrets.token_urlsafe(32), True

    def value(self, nonce: str, form: str) -> str:
        mac = hmac.new(self.secret, f"csrf\x00{form}\x00{nonce}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:24]).decode()

    def set_cookie(self, response: Response, nonce: str) -> None:
        response.set_cookie(
            self.cookie, nonce, httponly=True, samesite="strict", secure=self.secure, path="/"
        )

    def verify(self, request: Request, submitted: str, form: str) -> None:
        nonce = request.cookies.get(self.cookie, "")
        if not _NONCE.match(nonce) or not hmac.compare_digest(
            submitted.encode(), self.value(nonce, form).encode()
        ):
            raise CsrfError
        origin = request.headers.get("origin", "null")
        # Browsers send "null" under Referrer-Policy: no-referrer; the token decides then.
        if origin != "null" and origin.lower() not in self._origins(request):
            raise CsrfError

    def _origins(self, request: Request) -> set[str]:
        # Not the request's own base URL: it comes from the Host header, which the sender chooses.
        return {_origin(self.base_url)}


class SecurityHeaders:
    """Headers every response carries; pages with signed links are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        archive = str(scope.get("path", "")).startswith("/archive")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                # Only the pages themselves: a redirect or an error is never kept by a cache.
                # A page that said how it may be cached (a restricted archive) keeps its word.
                own = any(name.lower() == b"cache-control" for name, _ in headers)
                extra = _headers(archive and message.get("status") == 200)
                headers.extend(h for h in extra if not (own and h[0] == b"cache-control"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _headers(public: bool) -> list[tuple[bytes, bytes]]:
    cache = b"public, max-age=300" if public else b"no-store"
    return [
        (b"content-security-policy", CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cache-control", cache),
    ]
