"""The staff console's door: login with a password and a second factor, sessions, logout, CSRF,
headers and the IP allow-list, through TestClient against the real app on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from starlette.testclient import TestClient

from newsletter.actors import Actor
from newsletter.config import Settings
from newsletter.console import create_admin_app
from newsletter.console.security import CSP
from newsletter.db import make_engine
from newsletter.models import AdminEvent, StaffGrant, StaffSession, StaffUser
from newsletter.services import staff
from tests.chromium import CHROMIUM, CHROMIUM_ARGS, need_chromium
from tests.conftest import Clock, Instance

PASSWORD = "correct horse battery staple"
EDITOR = "li.wei@example.org"
LOOPBACK = ("127.0.0.1", 50000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(instance: Instance) -> Iterator[Engine]:
    made = make_engine(instance.settings.resolved_database_url)
    yield made
    made.dispose()


@pytest.fixture
def secret(instance: Instance, engine: Engine) -> str:
    """An editor for all missions, invited: the TOTP secret an authenticator app would hold."""
    enrolled = staff.add_staff(
        instance.settings, EDITOR, role="editor", name="李伟", password=PASSWORD,
        actor=Actor.cli(), db=engine,
    )  # fmt: skip
    return enrolled.enrolment.totp_secret


def _client(
    settings: Settings,
    clock: Clock,
    *,
    base_url: str = "https://testserver",
    peer: tuple[str, int] = LOOPBACK,
) -> TestClient:
    app = create_admin_app(settings, clock=clock)
    return TestClient(app, base_url=base_url, client=peer, follow_redirects=False)


@pytest.fixture
def browser(instance: Instance, clock: Clock) -> Iterator[TestClient]:
    with _client(instance.settings, clock) as client:
        yield client


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def _password_step(client: TestClient, email: str = EDITOR, password: str = PASSWORD) -> Any:
    form = client.get("/admin/login")
    assert form.status_code == 200
    return client.post(
        "/admin/login", data={"email": email, "password": password, "csrf": _csrf(form.text)}
    )


def _code_step(client: TestClient, code: str) -> Any:
    page = client.get("/admin/login/code")
    assert page.status_code == 200, page.text
    return client.post("/admin/login/code", data={"code": code, "csrf": _csrf(page.text)})


def _totp(secret: str, clock: Clock) -> str:
    return pyotp.TOTP(secret).at(clock.now)


def _log_in(client: TestClient, secret: str, clock: Clock) -> None:
    assert _password_step(client).headers["location"] == "/admin/login/code"
    done = _code_step(client, _totp(secret, clock))
    assert (done.status_code, done.headers["location"]) == (303, "/admin")


def _events(engine: Engine, action: str) -> list[AdminEvent]:
    with Session(engine) as session:
        query = select(AdminEvent).where(AdminEvent.action == action)
        return list(session.exec(query.order_by(col(AdminEvent.id))).all())


def _user(engine: Engine) -> StaffUser:
    with Session(engine) as session:
        return session.exec(select(StaffUser).where(StaffUser.email == EDITOR)).one()


def test_password_then_enrolment_code_opens_the_dashboard(
    browser: TestClient, secret: str, clock: Clock, engine: Engine
) -> None:
    assert browser.get("/admin").headers["location"] == "/admin/login"
    form = browser.get("/admin/login")
    assert '<html lang="zh-CN">' in form.text
    assert '<label for="email">邮箱</label>' in form.text
    assert '<label for="password">密码</label>' in form.text

    step = _password_step(browser)
    assert (step.status_code, step.headers["location"]) == (303, "/admin/login/code")
    cookie = step.headers["set-cookie"]
    assert cookie.startswith("__Host-nl_admin=")
    for flag in ("HttpOnly", "Path=/", "SameSite=strict", "Secure"):
        assert flag.lower() in cookie.lower()
    pending = browser.cookies["__Host-nl_admin"]

    code_page = browser.get("/admin/login/code")
    assert '<label for="code">验证码</label>' in code_page.text
    assert "<svg" in code_page.text and "二维码 QR code" in code_page.text  # enrolment
    assert " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)) in code_page.text

    done = _code_step(browser, _totp(secret, clock))
    assert (done.status_code, done.headers["location"]) == (303, "/admin")
    assert browser.cookies["__Host-nl_admin"] != pending  # a new session id after the code
    home = browser.get("/admin")
    assert home.status_code == 200
    for shown in (EDITOR, "李伟", "编辑 Editor", "全部使馆"):
        assert shown in home.text
    assert _user(engine).status == "active"
    (login,) = _events(engine, "staff.login")
    assert (login.actor_kind, login.actor_id, login.via, login.ip) == (
        "staff", EDITOR, "console", "127.0.0.1",
    )  # fmt: skip
    with Session(engine) as session:
        rows = session.exec(select(StaffSession)).all()
    assert len(rows) == 2 and sum(r.revoked_at is not None for r in rows) == 1
    assert pending not in {r.id for r in rows}  # only hashes are stored


def test_every_console_answer_carries_the_headers(browser: TestClient, secret: str) -> None:
    for path in ("/admin/login", "/admin", "/admin/login/code", "/admin/nowhere"):
        answer = browser.get(path)
        assert answer.headers["content-security-policy"] == CSP
        assert "unsafe-inline" not in CSP
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-frame-options"] == "DENY"
    page = browser.get("/admin/login").text
    assert "style=" not in page and "<script" not in page and "<style" not in page
    sheet = browser.get("/admin/static/console.css")
    assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/css")
    assert browser.get("/admin/nowhere").status_code == 404


def test_a_used_code_is_refused_and_recovery_codes_work_once(
    instance: Instance, browser: TestClient, secret: str, clock: Clock, engine: Engine
) -> None:
    _log_in(browser, secret, clock)
    used = _totp(secret, clock)
    browser.cookies.clear()
    _password_step(browser)
    again = _code_step(browser, used)
    assert again.status_code == 401 and "验证码不正确或已用过" in again.text

    codes = staff.reset_2fa(instance.settings, EDITOR, actor=Actor.cli(), db=engine)
    fresh = codes.enrolment
    browser.cookies.clear()
    _password_step(browser)
    # While enrolling, only the authenticator app's code proves the new secret works.
    assert _code_step(browser, fresh.recovery_codes[0]).status_code == 401
    assert _code_step(browser, _totp(fresh.totp_secret, clock)).status_code == 303
    browser.cookies.clear()
    _password_step(browser)
    assert _code_step(browser, fresh.recovery_codes[0].upper()).status_code == 303
    browser.cookies.clear()
    _password_step(browser)
    assert _code_step(browser, fresh.recovery_codes[0]).status_code == 401
    logins = _events(engine, "staff.login")
    assert logins[-1].detail == '{"factor":"recovery","recovery_codes_left":9}'


def test_failures_are_audited_and_throttled_per_account(
    browser: TestClient, secret: str, clock: Clock, engine: Engine
) -> None:
    for _ in range(5):
        assert _password_step(browser, password="wrong password 123").status_code == 401
    refused = _password_step(browser)  # the right password, too late
    assert refused.status_code == 429 and "尝试次数过多" in refused.text
    failed = _events(engine, "staff.login-failed")
    assert len(failed) == 5
    assert {(e.target, e.ip) for e in failed} == {(f"staff:{EDITOR}", "127.0.0.1")}
    assert failed[0].detail == '{"step":"password","why":"wrong password"}'
    assert len(_events(engine, "staff.login-throttled")) == 1
    clock.advance(minutes=16)
    _log_in(browser, secret, clock)


def test_failures_are_throttled_per_address_across_accounts(
    browser: TestClient, secret: str, clock: Clock, engine: Engine
) -> None:
    for n in range(20):
        assert _password_step(browser, email=f"guess{n}@example.org").status_code == 401
    assert _password_step(browser).status_code == 429
    assert len(_events(engine, "staff.login-failed")) == 20


def test_a_wrong_code_is_audited_and_counts(
    browser: TestClient, secret: str, clock: Clock, engine: Engine
) -> None:
    _password_step(browser)
    wrong = _code_step(browser, "000000" if _totp(secret, clock) != "000000" else "111111")
    assert wrong.status_code == 401
    (failed,) = _events(engine, "staff.login-failed")
    assert failed.detail == '{"step":"code","why":"wrong code"}'
    assert _user(engine).status == "invited"


def _snapshot(engine: Engine) -> tuple[Any, ...]:
    with Session(engine) as session:
        return (
            [u.model_dump() for u in session.exec(select(StaffUser))],
            [g.model_dump() for g in session.exec(select(StaffGrant))],
            [e.model_dump() for e in session.exec(select(AdminEvent))],
            [(s.id, s.mfa_at, s.revoked_at) for s in session.exec(select(StaffSession))],
        )


def test_a_get_never_changes_state(
    browser: TestClient, secret: str, clock: Clock, engine: Engine
) -> None:
    before = _snapshot(engine)
    for path in ("/admin", "/admin/login", "/admin/login/code", "/admin/logout"):
        browser.get(path)
    assert _snapshot(engine) == before
    _log_in(browser, secret, clock)
    before = _snapshot(engine)
    for path in ("/admin", "/admin/login", "/admin/login/code", "/admin/logout"):
        assert browser.get(path).status_code in {200, 303, 405}
    assert _snapshot(engine) == before


def test_a_missing_or_forged_csrf_token_changes_nothing(
    browser: TestClient, secret: str, clock: Clock, engine: Engine
) -> None:
    browser.get("/admin/login")
    before = _snapshot(engine)
    form = {"email": EDITOR, "password": PASSWORD}
    for token in ("", "forged" * 5):
        refused = browser.post("/admin/login", data={**form, "csrf": token})
        assert refused.status_code == 403 and "表单已过期" in refused.text
    assert _snapshot(engine) == before

    _log_in(browser, secret, clock)
    home = browser.get("/admin")
    before = _snapshot(engine)
    assert browser.post("/admin/logout", data={"csrf": "forged"}).status_code == 403
    # A valid token from another origin (a page elsewhere posting here) is refused too.
    elsewhere = {"origin": "https://evil.example"}
    assert (
        browser.post("/admin/logout", data={"csrf": _csrf(home.text)}, headers=elsewhere)
    ).status_code == 403
    assert _snapshot(engine) == before
    assert browser.get("/admin").status_code == 200


def test_logout_revokes_the_session(
    browser: TestClient, secret: str, clock: Clock, engine: Engine
) -> None:
    _log_in(browser, secret, clock)
    token = browser.cookies["__Host-nl_admin"]
    home = browser.get("/admin")
    out = browser.post("/admin/logout", data={"csrf": _csrf(home.text)})
    assert (out.status_code, out.headers["location"]) == (303, "/admin/login")
    replayed = browser.get("/admin", headers={"cookie": f"__Host-nl_admin={token}"})
    assert replayed.headers["location"] == "/admin/login"
    assert len(_events(engine, "staff.logout")) == 1


def test_sessions_end_when_idle_too_long_and_after_twelve_hours(
    browser: TestClient, secret: str, clock: Clock
) -> None:
    _log_in(browser, secret, clock)
    clock.advance(minutes=29)
    assert browser.get("/admin").status_code == 200
    clock.advance(minutes=31)
    assert browser.get("/admin").status_code == 303
    clock.advance(minutes=1)
    _log_in(browser, secret, clock)
    for _ in range(35):  # in use all along, every 20 minutes: still 12 hours at most
        clock.advance(minutes=20)
        assert browser.get("/admin").status_code == 200
    clock.advance(minutes=20)
    assert browser.get("/admin").headers["location"] == "/admin/login"


@pytest.mark.parametrize("change", ["disable", "grant", "reset-2fa"])
def test_a_role_status_or_second_factor_change_ends_open_sessions(
    instance: Instance, browser: TestClient, secret: str, clock: Clock, engine: Engine,
    change: str,
) -> None:  # fmt: skip
    _log_in(browser, secret, clock)
    settings, cli = instance.settings, Actor.cli()
    if change == "disable":
        staff.disable(settings, EDITOR, actor=cli, db=engine)
    elif change == "grant":
        staff.grant(settings, EDITOR, role="auditor", actor=cli, db=engine)
    else:
        staff.reset_2fa(settings, EDITOR, actor=cli, db=engine)
    assert browser.get("/admin").headers["location"] == "/admin/login"
    if change == "disable":
        browser.cookies.clear()
        assert _password_step(browser).status_code == 401
        assert _events(engine, "staff.login-failed")[-1].detail.endswith('"why":"disabled"}')


def test_the_allow_list_refuses_other_clients_before_any_page(
    instance: Instance, clock: Clock, secret: str
) -> None:
    intranet = instance.settings.overridden({"admin.allow_networks": ["10.20.0.0/16"]})
    with _client(intranet, clock) as client:
        refused = client.get("/admin/login")
        assert refused.status_code == 403 and "may not open the staff console" in refused.text
        assert refused.headers["content-security-policy"] == CSP
        spoofed = client.get("/admin/login", headers={"x-forwarded-for": "10.20.1.2"})
        assert spoofed.status_code == 403  # no trusted proxy: the header proves nothing
    with _client(intranet, clock, peer=("10.20.3.4", 40000)) as client:
        assert client.get("/admin/login").status_code == 200
    proxied = intranet.overridden({"admin.trusted_proxies": ["127.0.0.1"]})
    with _client(proxied, clock) as client:
        ok = client.get("/admin/login", headers={"x-forwarded-for": "10.20.1.2"})
        assert ok.status_code == 200
        outside = client.get("/admin/login", headers={"x-forwarded-for": "192.0.2.9"})
        assert outside.status_code == 403


def test_plain_http_cookies_only_from_loopback(
    instance: Instance, clock: Clock, secret: str
) -> None:
    with _client(instance.settings, clock, base_url="http://127.0.0.1:8001") as client:
        cookie = _password_step(client).headers["set-cookie"]
        assert cookie.startswith("nl_admin=") and "secure" not in cookie.lower()
    lan = instance.settings.overridden({"admin.allow_networks": ["10.0.0.0/8"]})
    # From another machine over plain http the cookies are Secure anyway: a browser drops
    # them, and the console works only over https (directly or through a trusted proxy).
    with _client(lan, clock, base_url="http://console.intranet", peer=("10.0.0.5", 1)) as client:
        cookie = client.get("/admin/login").headers["set-cookie"]
        assert cookie.startswith("__Host-nl_admin_csrf=") and "secure" in cookie.lower()


# --- `newsletter run --admin`, and a person in chromium --------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@dataclass
class Running:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture
def running(instance: Instance, secret: str) -> Iterator[Running]:
    """`newsletter run --admin` in its own process: scheduler, sender and the console."""
    port = _free_port()
    command = [
        sys.executable, "-c", "from newsletter.cli import main; main()",
        "--config", str(instance.config), "run", "--admin", "--admin-port", str(port),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    log = instance.dir / "run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        found = Running(f"http://127.0.0.1:{port}", process, log)
        try:
            deadline = time.monotonic() + 30
            while not _answers(f"{found.url}/admin/login"):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"run --admin did not serve the console:\n{log.read_text()}")
                time.sleep(0.2)
            yield found
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_run_admin_serves_the_console_beside_the_scheduler(running: Running) -> None:
    with urllib.request.urlopen(f"{running.url}/admin/login", timeout=5) as response:
        assert response.headers["content-security-policy"] == CSP
        assert "邮箱" in response.read().decode()
    assert running.stop() == 0
    assert "run: stopped" in running.log.read_text()


WIDTH = 360


@pytest.mark.browser
# The pages are the same on PostgreSQL, which the TestClient tests above cover.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_log_in_with_two_factors_at_360_px_with_and_without_javascript(
    running: Running, secret: str, instance: Instance, engine: Engine
) -> None:
    need_chromium()
    from playwright.sync_api import sync_playwright

    recovery = staff.reset_2fa(instance.settings, EDITOR, actor=Actor.cli(), db=engine).enrolment
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for javascript, code in ((True, None), (False, recovery.recovery_codes[0])):
                context = browser.new_context(
                    viewport={"width": WIDTH, "height": 720}, java_script_enabled=javascript
                )
                page = context.new_page()
                page.goto(f"{running.url}/admin")
                page.get_by_label("邮箱").fill(EDITOR)
                page.get_by_label("密码").fill(PASSWORD)
                page.get_by_role("button", name="登录").click()
                page.wait_for_selector("h1:has-text('两步验证')")
                if code is None:  # the first login enrols: the QR code is on the page
                    assert page.locator("figure.qr svg").is_visible()
                    code = pyotp.TOTP(recovery.totp_secret).now()
                page.get_by_label("验证码").fill(code)
                page.get_by_role("button", name="验证").click()
                page.wait_for_selector("h1:has-text('首页')")
                assert page.locator("html").get_attribute("lang") == "zh-CN"
                assert EDITOR in page.content() and "编辑 Editor" in page.content()
                width = page.evaluate("() => document.documentElement.scrollWidth")
                assert width <= WIDTH, f"the dashboard is {width}px wide at {WIDTH}px"
                page.get_by_role("button", name="退出登录").click()
                page.wait_for_selector("h1:has-text('登录')")
                context.close()
        finally:
            browser.close()
    assert [e.detail for e in _events(engine, "staff.login")] == [
        '{"enrolled":true,"factor":"totp"}', '{"factor":"recovery","recovery_codes_left":9}',
    ]  # fmt: skip
    assert running.stop() == 0


def test_the_session_says_what_its_holder_may_do_and_when_to_step_up(
    instance: Instance, browser: TestClient, secret: str, clock: Clock, engine: Engine
) -> None:
    from newsletter.roles import Permission
    from newsletter.services import logins

    staff.grant(
        instance.settings, EDITOR, role="liaison", scope=["de-berlin"], actor=Actor.cli(), db=engine
    )
    _log_in(browser, secret, clock)
    token = browser.cookies["__Host-nl_admin"]
    who = logins.who(instance.settings, token, now=clock.now, db=engine)
    assert who is not None
    assert who.can(Permission.READ_SUBSCRIBERS, "de-berlin")
    assert not who.can(Permission.READ_SUBSCRIBERS, "fr-paris")
    assert who.scope(Permission.READ_SUBSCRIBERS).missions == frozenset({"de-berlin"})
    assert "使馆联络员 Embassy liaison" in browser.get("/admin").text
    assert who.stepped_up(clock.now)
    clock.advance(minutes=10)
    assert not who.stepped_up(clock.now)
