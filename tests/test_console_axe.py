"""axe-core on every console page in Debian's chromium: no serious or critical violation.

The console runs on a loopback port with a sample issue, lists, a scheduled campaign and a
request waiting for sign-off, so every page has something on it; an administrator (who may open
every page) logs in with two factors and axe (vendored in tests/vendor) checks each page as
served, under its own CSP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
import uvicorn
from sqlalchemy import Engine
from typer.testing import CliRunner

from newsletter.actors import Actor
from newsletter.console import create_admin_app
from newsletter.db import make_engine
from newsletter.models import utcnow
from newsletter.services import approvals, scheduling, staff
from tests.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import IN_CI, Instance, load_sample

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
AXE_VERSION = "4.14.1"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
PASSWORD = "correct horse battery staple"
ADMIN = "root@example.org"
SLUG = "2020-01"
BERLIN_AI = "chen.hao@de-berlin.example.org"
BAD = ("serious", "critical")


def test_the_vendored_axe_is_the_pinned_release() -> None:
    data = AXE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == AXE_SHA256
    assert data.startswith(f"/*! axe v{AXE_VERSION}".encode())
    readme = (AXE.parent / "README.md").read_text(encoding="utf-8")
    assert AXE_VERSION in readme and AXE_SHA256 in readme


@pytest.fixture
def served(instance: Instance) -> Iterator[str]:
    """The console on a loopback port of its own, in this process (uvicorn in a thread)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    app = create_admin_app(instance.settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the console did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def engine(instance: Instance) -> Iterator[Engine]:
    made = make_engine(instance.settings.resolved_database_url)
    yield made
    made.dispose()


def _violations(page: Any) -> list[str]:
    # Evaluated through the browser's debugging protocol, which the page's CSP does not govern:
    # the pages are checked exactly as served.
    page.evaluate(AXE.read_text(encoding="utf-8"))
    found = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + "; ".join(" ".join(n["target"]) for n in v["nodes"][:5])
        for v in found
        if v["impact"] in BAD
    ]


@pytest.mark.browser
# The pages are the same on PostgreSQL, which the TestClient tests of each page cover.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_console_page_has_a_serious_or_critical_violation(
    served: str, instance: Instance, engine: Engine, runner: CliRunner
) -> None:
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail(f"CI=true but {CHROMIUM} is missing; .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    load_sample(runner, instance)
    settings = instance.settings
    soon = (utcnow() + dt.timedelta(hours=3)).replace(microsecond=0).isoformat()
    campaign = scheduling.schedule_issue(
        settings, SLUG, scheduling.when(settings, at=soon), actor=Actor.cli(), db=engine
    ).campaign
    approvals.request_campaign(
        settings, SLUG, approvals.schedule_spec(settings, now=True),
        actor=Actor.staff("li.wei@example.org"), db=engine,
    )  # fmt: skip
    enrolled = staff.add_staff(
        settings, ADMIN, role="admin", password=PASSWORD, actor=Actor.cli(), db=engine
    )
    pages = [
        "/admin", "/admin/issues", f"/admin/issues/{SLUG}", "/admin/issues/import",
        f"/admin/issues/{SLUG}/preview?subscriber={BERLIN_AI}",
        f"/admin/campaigns/new?issue={SLUG}", "/admin/approvals", f"/admin/campaigns/{campaign}",
        f"/admin/campaigns/{campaign}/recipients", f"/admin/campaigns/{campaign}/cancel",
        "/admin/audit", "/admin/audit/verify",
    ]  # fmt: skip
    problems: dict[str, list[str]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 360, "height": 720}).new_page()
            page.goto(f"{served}/admin/login")
            problems["login"] = _violations(page)
            page.get_by_label("邮箱").fill(ADMIN)
            page.get_by_label("密码").fill(PASSWORD)
            page.get_by_role("button", name="登录").click()
            page.wait_for_selector("h1:has-text('两步验证')")
            problems["code"] = _violations(page)
            page.get_by_label("验证码").fill(pyotp.TOTP(enrolled.enrolment.totp_secret).now())
            page.get_by_role("button", name="验证").click()
            page.wait_for_selector("h1:has-text('首页')")
            for path in pages:
                response = page.goto(f"{served}{path}")
                assert response is not None and response.status == 200, path
                problems[path] = _violations(page)
        finally:
            browser.close()
    assert len(problems) == len(pages) + 2
    bad = {path: found for path, found in problems.items() if found}
    assert not bad, "\n".join(f"{path}: {v}" for path, found in bad.items() for v in found)
