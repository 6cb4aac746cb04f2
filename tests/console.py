"""Test support for the staff console's pages: form tokens and an issue upload."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

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
