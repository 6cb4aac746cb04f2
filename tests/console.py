"""Test support for the staff console's pages: a signed-in browser, form tokens, an upload."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyotp
from starlette.testclient import TestClient

from newsletter.config import Settings
from newsletter.console import create_admin_app
from tests.conftest import Clock

Login = Callable[..., TestClient]  # a signed-in browser for a role


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, html
    return found.group(1)


def upload(client: TestClient, path: Path, data: bytes | None = None, **extra: str) -> Any:
    form = client.get("/admin/issues/import")
    assert form.status_code == 200, form.text
    content = path.read_bytes() if data is None else data
    return client.post(
        "/admin/issues/import",
        data={"csrf": csrf(form.text), **extra},
        files={"file": (path.name, content, "text/plain")},
    )


PASSWORD = "correct horse battery staple"


def open_console(settings: Settings, clock: Clock) -> TestClient:
    """A browser on the console over https from loopback; the caller closes it (`__exit__`)."""
    client = TestClient(
        create_admin_app(settings, clock=clock), base_url="https://testserver",
        client=("127.0.0.1", 50000), follow_redirects=False,
    )  # fmt: skip
    client.__enter__()
    return client


def sign_in(client: TestClient, email: str, totp_secret: str, clock: Clock) -> None:
    """Password, then the authenticator's code at the clock's time, as a person signs in."""
    form = client.get("/admin/login")
    step = client.post(
        "/admin/login", data={"email": email, "password": PASSWORD, "csrf": csrf(form.text)}
    )
    assert step.headers["location"] == "/admin/login/code", step.text
    page = client.get("/admin/login/code")
    code = pyotp.TOTP(totp_secret).at(clock.now)
    done = client.post("/admin/login/code", data={"code": code, "csrf": csrf(page.text)})
    assert done.headers["location"] == "/admin", done.text
