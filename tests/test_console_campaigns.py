"""The console's campaign pages: the wizard, the approvals queue with step-up, the campaign page
and its controls, the recipients ledger and its CSV, per role and scope, through TestClient
against the real app on SQLite and PostgreSQL, ending in a real send to the SMTP sink."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
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
from typing import Any

import pyotp
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from newsletter.actors import Actor, Scope
from newsletter.console import create_admin_app
from newsletter.console.campaign_pages import csv_text
from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import make_engine
from newsletter.delivery.campaigns import LedgerRow
from newsletter.models import (
    AdminEvent,
    Campaign,
    CampaignRequest,
    Delivery,
    SchedulePlan,
    StaffSession,
    utcnow,
)
from newsletter.scheduling import plans
from newsletter.services import approvals, campaigns, issues, staff, subscribers
from newsletter.testing.sink import LoopbackController
from tests.chromium import CHROMIUM, CHROMIUM_ARGS, need_chromium
from tests.conftest import Clock, Instance, load_sample, send_sample

PASSWORD = "correct horse battery staple"
SLUG = "2020-01"
LOOPBACK = ("127.0.0.1", 50000)
ROLES = {
    "editor": ("li.wei@example.org", "editor", ()),
    "publisher": ("wang.fang@example.org", "publisher", ()),
    "admin": ("root@example.org", "admin", ()),
    "liaison": ("berlin@example.org", "liaison", ("de-berlin",)),
    "auditor": ("audit@example.org", "auditor", ()),
}


class Staff:
    """A signed-in browser per role, all on one clock."""

    def __init__(self, instance: Instance, clock: Clock, engine: Engine) -> None:
        self.instance, self.clock, self.engine = instance, clock, engine
        self.secrets: dict[str, str] = {}
        self.clients: dict[str, TestClient] = {}

    def __getitem__(self, role: str) -> TestClient:
        if role not in self.clients:
            email, name, scope = ROLES[role]
            enrolled = staff.add_staff(
                self.instance.settings, email, role=name, scope=scope, password=PASSWORD,
                actor=Actor.cli(), db=self.engine,
            )  # fmt: skip
            self.secrets[role] = enrolled.enrolment.totp_secret
            app = create_admin_app(self.instance.settings, clock=self.clock)
            client = TestClient(
                app, base_url="https://testserver", client=LOOPBACK, follow_redirects=False
            )
            client.__enter__()
            self.clients[role] = client
            login = client.get("/admin/login")
            client.post("/admin/login", data={"email": email, "password": PASSWORD,
                                              "csrf": csrf_of(login.text)})  # fmt: skip
            code = client.get("/admin/login/code")
            done = client.post("/admin/login/code", data={"code": self.totp(role),
                                                          "csrf": csrf_of(code.text)})  # fmt: skip
            assert done.headers["location"] == "/admin", done.text
        return self.clients[role]

    def totp(self, role: str) -> str:
        return pyotp.TOTP(self.secrets[role]).at(self.clock.now)

    def close(self) -> None:
        for client in self.clients.values():
            client.__exit__(None, None, None)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


@pytest.fixture
def clock() -> Clock:
    made = Clock()
    made.now = utcnow().replace(microsecond=0)  # plans are made ahead of the real clock
    return made


@pytest.fixture
def engine(instance: Instance) -> Iterator[Engine]:
    made = make_engine(instance.settings.resolved_database_url)
    yield made
    made.dispose()


@pytest.fixture
def people(runner: CliRunner, instance: Instance, clock: Clock, engine: Engine) -> Iterator[Staff]:
    load_sample(runner, instance)
    crowd = Staff(instance, clock, engine)
    yield crowd
    crowd.close()


def _day_after_tomorrow() -> str:
    return (dt.date.today() + dt.timedelta(days=2)).isoformat()


def _request(people: Staff, role: str = "editor", **choice: str) -> Any:
    """The wizard as an editor fills it: preview the plans (GET), then submit (POST)."""
    client = people[role]
    query = {"issue": SLUG, "kind": "now", **choice}
    preview = client.get("/admin/campaigns/new", params=query)
    assert preview.status_code == 200, preview.text
    return client.post("/admin/campaigns/new", data={**query, "csrf": csrf_of(preview.text)})


def _a_token(client: TestClient) -> str:
    """A valid token of one of this person's own forms (the wizard's)."""
    return csrf_of(client.get("/admin/campaigns/new", params={"issue": SLUG, "kind": "now"}).text)


def _only_request(engine: Engine) -> CampaignRequest:
    with Session(engine) as session:
        return session.exec(select(CampaignRequest)).one()


def _approve(people: Staff, role: str, request_id: int, **extra: str) -> Any:
    client = people[role]
    queue = client.get("/admin/approvals")
    assert queue.status_code == 200
    return client.post(f"/admin/approvals/{request_id}/approve",
                       data={"comment": "同意 ok", "csrf": csrf_of(queue.text), **extra})  # fmt: skip


def test_the_wizard_shows_the_audience_and_plans_before_anything_is_saved(
    people: Staff, engine: Engine
) -> None:
    editor = people["editor"]
    settings = people.instance.settings
    gone = subscribers.list_subscribers(settings, scope=Scope.of(["de-berlin"]))[0].email
    subscribers.unsubscribe_on_request(
        settings, gone, reason="asked by phone", actor=Actor.cli(), scope=Scope.all()
    )
    # The approvals page is where an editor starts: pick the issue, then the wizard.
    start = editor.get("/admin/approvals")
    assert 'action="/admin/campaigns/new"' in start.text
    assert f'<option value="{SLUG}">{SLUG}</option>' in start.text
    page = editor.get("/admin/campaigns/new", params={"issue": SLUG})
    assert page.status_code == 200 and '<html lang="zh-CN">' in page.text
    assert "收件人" in page.text
    assert "<tr><td>de-berlin</td><td>5</td></tr>" in page.text  # six on the list, one gone
    assert "<tr><td>not active (unsubscribed)</td><td>1</td></tr>" in page.text
    local = editor.get("/admin/campaigns/new", params={
        "issue": SLUG, "kind": "local", "local": "09:00", "date": _day_after_tomorrow(),
        "working_days": "1"})  # fmt: skip
    assert "将创建的计划" in local.text and "Europe/Berlin" in local.text
    assert f"{_day_after_tomorrow()} 09:00 +01:00" in local.text  # Berlin's own morning
    # …and Beijing's clock beside it: 09:00 in Berlin is 16:00 in Beijing in winter.
    assert f"{_day_after_tomorrow()} 16:00" in local.text
    wrong = editor.get("/admin/campaigns/new", params={"issue": SLUG, "kind": "local",
                                                        "local": "25:00"})  # fmt: skip
    assert wrong.status_code == 400 and "--local" in wrong.text
    with Session(engine) as session:
        assert session.exec(select(CampaignRequest)).all() == []
        assert session.exec(select(SchedulePlan)).all() == []

    made = _request(people, kind="local", local="09:00", date=_day_after_tomorrow())
    assert made.status_code == 303 and made.headers["location"].startswith("/admin/approvals")
    request = _only_request(engine)
    assert request.state == "requested" and request.schedule["local"] == "09:00"
    with Session(engine) as session:
        assert session.exec(select(SchedulePlan)).all() == []  # nothing before the sign-off


def test_a_publisher_approves_an_editors_request_and_it_is_scheduled(
    people: Staff, engine: Engine
) -> None:
    _request(people, kind="local", local="09:00", date=_day_after_tomorrow())
    request = _only_request(engine)
    queue = people["publisher"].get("/admin/approvals")
    assert f"#{request.id} {SLUG}" in queue.text and "批准" in queue.text
    done = _approve(people, "publisher", request.id or 0)
    assert done.status_code == 303, done.text
    campaign_path = done.headers["location"]
    assert re.fullmatch(r"/admin/campaigns/\d+", campaign_path)
    with Session(engine) as session:
        plans = session.exec(select(SchedulePlan)).all()
        assert plans and all(p.local_time == "09:00" for p in plans)
    page = people["publisher"].get(campaign_path)
    assert page.status_code == 200
    assert "scheduled" in page.text and "Europe/Berlin" in page.text
    assert "wang.fang@example.org" in page.text and "li.wei@example.org" in page.text
    assert "<progress" in page.text and "刷新" in page.text
    assert "暂停" in page.text  # the publisher may control it


def test_the_requester_cannot_approve_their_own_and_an_editor_cannot_approve(
    people: Staff, engine: Engine
) -> None:
    _request(people, role="publisher")
    request = _only_request(engine)
    own = people["publisher"].get("/admin/approvals")
    assert "须由他人签发" in own.text and f"/admin/approvals/{request.id}/approve" not in own.text
    refused = _approve(people, "publisher", request.id or 0)
    assert refused.status_code == 409 and "someone else must approve" in refused.text
    editor = people["editor"]
    queue = editor.get("/admin/approvals")
    assert f"/admin/approvals/{request.id}/approve" not in queue.text
    forbidden = editor.post(f"/admin/approvals/{request.id}/approve",
                            data={"csrf": _a_token(editor)})  # fmt: skip
    assert forbidden.status_code == 403
    assert _only_request(engine).state == "requested"
    # A liaison and an auditor cannot request either.
    for role in ("liaison", "auditor"):
        assert people[role].get("/admin/campaigns/new", params={"issue": SLUG}).status_code == 403
    # An administrator may sign off alone, with a reason, audited.
    done = _approve(people, "admin", request.id or 0, override="值班 on duty")
    assert done.status_code == 303
    # (the admin was not the requester: no override was needed, none is recorded)
    assert _only_request(engine).state == "approved" and _only_request(engine).override == ""


def test_approving_asks_for_a_fresh_code_after_ten_minutes(
    people: Staff, engine: Engine, clock: Clock
) -> None:
    _request(people)
    request = _only_request(engine)
    publisher = people["publisher"]
    clock.advance(minutes=11)
    asked = _approve(people, "publisher", request.id or 0)
    assert asked.status_code == 303
    assert asked.headers["location"] == "/admin/stepup?next=%2Fadmin%2Fapprovals"
    assert _only_request(engine).state == "requested"
    page = publisher.get(asked.headers["location"])
    assert '<label for="code">验证码</label>' in page.text
    wrong = publisher.post("/admin/stepup", data={"code": "000000", "next": "/admin/approvals",
                                                  "csrf": csrf_of(page.text)})  # fmt: skip
    assert wrong.status_code == 401
    ok = publisher.post("/admin/stepup", data={"code": people.totp("publisher"),
                                               "next": "//evil.example/x",
                                               "csrf": csrf_of(page.text)})  # fmt: skip
    assert (ok.status_code, ok.headers["location"]) == (303, "/admin")  # never off-site
    assert _approve(people, "publisher", request.id or 0).status_code == 303
    assert _only_request(engine).state == "approved"


def test_an_edit_after_approval_voids_it_on_the_pages(
    people: Staff, engine: Engine, instance: Instance, smtp_server: LoopbackController
) -> None:
    _request(people, kind="local", local="09:00", date=_day_after_tomorrow())
    request = _only_request(engine)
    path = _approve(people, "publisher", request.id or 0).headers["location"]
    text = (
        sample_issue_path()
        .read_text(encoding="utf-8")
        .replace("title_en: China S&T Innovation Express", "title_en: Edited")
    )
    issues.import_issue(instance.settings, text.encode(), source="x.yaml", actor=Actor.cli())
    page = people["publisher"].get(path)
    assert "cancelled" in page.text and "changed after its sign-off" in page.text
    queue = people["publisher"].get("/admin/approvals")
    assert "已失效" in queue.text
    smtp = instance.settings.overridden(
        {"transport": "smtp", "smtp.host": "127.0.0.1", "smtp.port": smtp_server.port}
    )
    assert send_sample(smtp, prepare=False).sent == 0 and smtp_server.handler.received == []


def _state(engine: Engine) -> tuple[Any, ...]:
    with Session(engine) as session:
        return (
            [(c.id, str(c.state), c.reason) for c in session.exec(select(Campaign))],
            [(d.id, str(d.state)) for d in session.exec(select(Delivery))],
            [
                (r.id, r.state, r.decided_by, r.campaign_id)
                for r in session.exec(select(CampaignRequest))
            ],
            [(p.id, str(p.state)) for p in session.exec(select(SchedulePlan))],
            [e.id for e in session.exec(select(AdminEvent))],
            [(s.id, s.mfa_at) for s in session.exec(select(StaffSession))],
        )


def test_gets_never_change_state_and_forged_or_missing_tokens_change_nothing(
    people: Staff, engine: Engine
) -> None:
    _request(people)
    request = _only_request(engine)
    path = _approve(people, "publisher", request.id or 0).headers["location"]
    campaign_id = int(path.rsplit("/", 1)[1])
    publisher = people["publisher"]
    before = _state(engine)
    pages = [
        "/admin/approvals", path, f"{path}/recipients", f"{path}/recipients.csv",
        f"{path}/cancel", "/admin/stepup", f"/admin/campaigns/new?issue={SLUG}&kind=now",
        f"{path}/pause", f"/admin/approvals/{request.id}/approve",
    ]  # fmt: skip
    for page in pages:
        assert publisher.get(page).status_code in {200, 405}, page
    assert _state(engine) == before

    for token in ("", "forged" * 5):
        for action in ("pause", "cancel", "resend-unknown", "take-back"):
            answer = publisher.post(f"{path}/{action}", data={"csrf": token})
            assert answer.status_code == 403, action
        assert publisher.post("/admin/campaigns/new",
                              data={"issue": SLUG, "kind": "now", "csrf": token}
                              ).status_code == 403  # fmt: skip
        assert publisher.post(f"/admin/approvals/{request.id}/reject",
                              data={"comment": "x", "csrf": token}).status_code == 403  # fmt: skip
    # A token made for another person's session is refused too.
    theirs = _a_token(people["editor"])
    assert publisher.post(f"{path}/pause", data={"csrf": theirs}).status_code == 403
    assert _state(engine) == before
    assert campaigns.campaign_status(people.instance.settings, campaign_id).state == "sending"


def test_pause_resume_and_cancel_with_a_confirmation_page(people: Staff, engine: Engine) -> None:
    _request(people, kind="local", local="09:00", date=_day_after_tomorrow())
    request = _only_request(engine)
    path = _approve(people, "publisher", request.id or 0).headers["location"]
    campaign_id = int(path.rsplit("/", 1)[1])
    settings = people.instance.settings
    publisher = people["publisher"]
    token = csrf_of(publisher.get(path).text)
    assert publisher.post(f"{path}/pause", data={"csrf": token}).headers["location"] == path
    assert campaigns.campaign_status(settings, campaign_id).state == "paused"
    assert "继续" in publisher.get(path).text
    assert publisher.post(f"{path}/resume", data={"csrf": token}).status_code == 303
    assert campaigns.campaign_status(settings, campaign_id).state == "scheduled"
    # An editor sees the page but not the controls, and cannot use them.
    editor = people["editor"]
    seen = editor.get(path)
    assert seen.status_code == 200 and "暂停" not in seen.text
    assert editor.post(f"{path}/pause", data={"csrf": _a_token(editor)}).status_code == 403
    confirm = publisher.get(f"{path}/cancel")
    assert "此操作不能撤销" in confirm.text and "确认取消" in confirm.text
    assert campaigns.campaign_status(settings, campaign_id).state == "scheduled"
    done = publisher.post(f"{path}/cancel", data={"csrf": csrf_of(confirm.text)})
    assert done.headers["location"] == path
    assert campaigns.campaign_status(settings, campaign_id).state == "cancelled"
    with Session(engine) as session:
        controls = ["campaign.pause", "campaign.resume", "campaign.cancel"]
        query = select(AdminEvent).where(col(AdminEvent.action).in_(controls))
        events = session.exec(query.order_by(col(AdminEvent.id))).all()
        assert [(e.action, e.actor_id, e.via) for e in events] == [
            (f"campaign.{a}", "wang.fang@example.org", "console")
            for a in ("pause", "resume", "cancel")
        ]


def test_take_back_missed_sends_the_rows_a_closed_window_skipped(
    people: Staff, engine: Engine, instance: Instance, smtp_server: LoopbackController,
    clock: Clock,
) -> None:  # fmt: skip
    _request(people, kind="local", local="09:00", date=_day_after_tomorrow())
    request = _only_request(engine)
    path = _approve(people, "publisher", request.id or 0).headers["location"]
    with Session(engine) as session:
        for plan in session.exec(select(SchedulePlan)).all():
            assert plan.id is not None
            plans.miss_plan(session, plan.id, plan.not_after + dt.timedelta(seconds=1))
        session.commit()
    publisher = people["publisher"]
    page = publisher.get(path)
    assert "补发错过的" in page.text
    clock.advance(minutes=11)  # it sends mail: a fresh code first
    asked = publisher.post(f"{path}/take-back", data={"csrf": csrf_of(page.text)})
    assert asked.headers["location"].startswith("/admin/stepup")
    code_page = publisher.get(asked.headers["location"])
    publisher.post("/admin/stepup", data={"code": people.totp("publisher"), "next": path,
                                          "csrf": csrf_of(code_page.text)})  # fmt: skip
    done = publisher.post(f"{path}/take-back", data={"csrf": csrf_of(page.text)})
    assert done.headers["location"] == path
    smtp = instance.settings.overridden(
        {"transport": "smtp", "smtp.host": "127.0.0.1", "smtp.port": smtp_server.port}
    )
    report = send_sample(smtp, prepare=False)
    assert report.sent == len(smtp_server.handler.received) > 0
    assert "finished" in publisher.get(path).text


def test_a_liaison_sees_only_their_missions_recipients(people: Staff, engine: Engine) -> None:
    _request(people)
    request = _only_request(engine)
    path = _approve(people, "publisher", request.id or 0).headers["location"]
    liaison = people["liaison"]
    page = liaison.get(f"{path}/recipients")
    assert page.status_code == 200
    missions = set(re.findall(r"<td>([a-z]{2}-[a-z-]+)</td>", page.text))
    assert missions == {"de-berlin"}
    paris = liaison.get(f"{path}/recipients", params={"mission": "fr-paris"})
    assert "fr-paris</td>" not in paris.text
    exported = liaison.get(f"{path}/recipients.csv")
    rows = list(csv.DictReader(io.StringIO(exported.text.lstrip("\ufeff"))))
    assert rows and {r["mission"] for r in rows} == {"de-berlin"}
    campaign_page = liaison.get(path)
    assert "fr-paris" not in campaign_page.text and "de-berlin" in campaign_page.text
    assert "暂停" not in campaign_page.text
    # The publisher sees every mission.
    everyone = people["publisher"].get(f"{path}/recipients.csv")
    assert (
        len({r["mission"] for r in csv.DictReader(io.StringIO(everyone.text.lstrip("\ufeff")))}) > 1
    )


def test_the_csv_export_is_formula_safe() -> None:
    row = LedgerRow("=cmd@example.org", "de-berlin", "failed", 1, "+550 @no such user", None, "-1")
    [header, line] = list(csv.reader(io.StringIO(csv_text([row]))))
    assert header[0] == "email"
    assert line[0] == "'=cmd@example.org" and line[4] == "'+550 @no such user" and line[6] == "'-1"


def test_a_real_send_after_approval_in_the_browser_reaches_each_subscriber_once(
    people: Staff, engine: Engine, instance: Instance, smtp_server: LoopbackController
) -> None:
    _request(people)
    request = _only_request(engine)
    path = _approve(people, "publisher", request.id or 0).headers["location"]
    campaign_id = int(path.rsplit("/", 1)[1])
    smtp = instance.settings.overridden(
        {"transport": "smtp", "smtp.host": "127.0.0.1", "smtp.port": smtp_server.port}
    )
    report = send_sample(smtp, prepare=False)  # the worker's send of the approved campaign
    ledger = campaigns.campaign_report(instance.settings, campaign_id, scope=Scope.all())
    active = {r.email for r in ledger.recipients}
    received = [m.rcpt for m in smtp_server.handler.received]
    assert sorted(received) == sorted(active) and report.sent == len(active) > 0
    page = people["publisher"].get(path)
    assert "finished" in page.text and f"{len(active)} / {len(active)}" in page.text
    recipients = people["publisher"].get(f"{path}/recipients", params={"state": "sent"})
    assert "250" in recipients.text  # each row with the server's reply
    assert approvals.get_request(instance.settings, request.id or 0).campaign == campaign_id
    # Live progress is an enhancement: a same-origin script (no inline code) and an SSE stream,
    # which, the campaign being over, sends its counts once and ends.
    assert '<script src="/admin/static/campaign.js" defer></script>' in page.text
    assert re.search(r"<script>|<script [^>]*>[^<]", page.text) is None
    script = people["publisher"].get("/admin/static/campaign.js")
    assert (
        script.headers["content-type"].startswith("text/javascript")
        and "EventSource" in script.text
    )
    events = people["publisher"].get(f"{path}/events")
    assert events.headers["content-type"].startswith("text/event-stream")
    [line] = [x for x in events.text.splitlines() if x.startswith("data: ")]
    progress = json.loads(line.removeprefix("data: "))
    assert progress["done"] is True and progress["state"] == "finished"
    assert progress["counts"]["sent"] == progress["total"] == len(active)


WIDTH = 360


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


def _browser_login(page: Any, url: str, email: str, secret: str) -> None:
    page.goto(f"{url}/admin")
    page.get_by_label("邮箱").fill(email)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_selector("h1:has-text('两步验证')")
    page.get_by_label("验证码").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="验证").click()
    page.wait_for_selector("h1:has-text('首页')")


def _fits(page: Any) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= WIDTH, f"{page.url} is {width}px wide at {WIDTH}px"


def test_in_chromium_an_editor_requests_a_publisher_approves_and_it_goes_out(
    runner: CliRunner, instance: Instance, engine: Engine, smtp_server: LoopbackController
) -> None:
    """`newsletter run --admin` with its real sender: request (JavaScript off), approve and
    watch it finish live (JavaScript on, the counts pushed by SSE), at 360 px."""
    need_chromium()
    from playwright.sync_api import ViewportSize, sync_playwright

    active = load_sample(runner, instance)
    secrets = {}
    for role in ("editor", "publisher"):
        email, name, scope = ROLES[role]
        secrets[role] = staff.add_staff(
            instance.settings, email, role=name, scope=scope, password=PASSWORD,
            actor=Actor.cli(), db=engine,
        ).enrolment.totp_secret  # fmt: skip
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-c", "from newsletter.cli import main; main()",
        "--config", str(instance.config), "run", "--admin", "--admin-port", str(port),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env |= {"NEWSLETTER_TRANSPORT": "smtp", "NEWSLETTER_SMTP__HOST": "127.0.0.1",
            "NEWSLETTER_SMTP__PORT": str(smtp_server.port)}  # fmt: skip
    log = instance.dir / "run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while not _answers(f"{url}/admin/login"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                size: ViewportSize = {"width": WIDTH, "height": 720}
                plain = browser.new_context(viewport=size, java_script_enabled=False)
                page = plain.new_page()
                _browser_login(page, url, ROLES["editor"][0], secrets["editor"])
                page.goto(f"{url}/admin/campaigns/new?issue={SLUG}")
                assert page.locator("html").get_attribute("lang") == "zh-CN"
                _fits(page)
                page.get_by_label("批准后立即发送").check()
                page.get_by_role("button", name="预览计划").click()
                page.get_by_role("button", name="提交审批").click()
                page.wait_for_selector("h1:has-text('签发')")
                assert f"#1 {SLUG}" in page.content()
                # An editor may withdraw their request, never approve it.
                assert page.get_by_role("button", name="撤回").count() == 1
                assert page.get_by_role("button", name="批准").count() == 0
                _fits(page)

                live = browser.new_context(viewport=size, java_script_enabled=True)
                watcher = live.new_page()
                errors: list[str] = []
                watcher.on(
                    "console", lambda m: errors.append(m.text) if m.type == "error" else None
                )
                _browser_login(watcher, url, ROLES["publisher"][0], secrets["publisher"])
                watcher.goto(f"{url}/admin/approvals")
                watcher.get_by_label("意见").fill("同意发出 approved")
                watcher.get_by_role("button", name="批准").click()
                watcher.wait_for_selector("h1:has-text('发送')")
                _fits(watcher)
                # No reload: the stream moves the counts and the state to the end.
                watcher.wait_for_selector("#campaign-state:has-text('finished')", timeout=60_000)
                sent = watcher.locator("tr[data-state='sent'] .count").inner_text()
                assert sent == f"{len(active)} / {len(active)}"
                assert errors == []  # nothing refused by the CSP

                # Without JavaScript the refresh link shows the same.
                page.goto(watcher.url)
                page.get_by_role("link", name="刷新").click()
                assert "finished" in page.locator("#campaign-state").inner_text()
            finally:
                browser.close()
        assert sorted(m.rcpt for m in smtp_server.handler.received) == sorted(active)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, log.read_text()
