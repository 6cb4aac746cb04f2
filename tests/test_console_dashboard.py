"""The console's dashboard: the next 48 hours of planned sends in Beijing and local time, the
campaigns in flight with their counts and pause reason, what needs attention, recent activity;
a liaison sees only their missions. Through the real app, services and database."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pyotp
import pytest
from sqlalchemy import Engine, text
from starlette.testclient import TestClient
from typer.testing import CliRunner

from newsletter.actors import Actor
from newsletter.console import create_admin_app
from newsletter.db import make_engine
from newsletter.models import utcnow
from newsletter.services import approvals, campaigns, scheduling, staff
from tests.conftest import Clock, Instance, load_sample

PASSWORD = "correct horse battery staple"
SLUG = "2020-01"
ROLES = {
    "editor": ("li.wei@example.org", ()),
    "publisher": ("wang.fang@example.org", ()),
    "liaison": ("berlin@example.org", ("de-berlin",)),
}


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


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


@dataclass
class Desk:
    campaign: int
    at: dt.datetime  # when the plan fires, as given (+08:00)
    clients: dict[str, TestClient]

    def page(self, role: str) -> str:
        shown = self.clients[role].get("/admin")
        assert shown.status_code == 200, shown.text
        return shown.text


@pytest.fixture
def desk(runner: CliRunner, instance: Instance, clock: Clock, engine: Engine) -> Iterator[Desk]:
    """A campaign of the sample issue planned 3 hours ahead and paused, a second request
    waiting for sign-off; then each role's dashboard as text."""
    load_sample(runner, instance)
    settings = instance.settings
    at = (clock.now + dt.timedelta(hours=3)).astimezone(dt.timezone(dt.timedelta(hours=8)))
    scheduled = scheduling.schedule_issue(
        settings, SLUG, scheduling.when(settings, at=at.isoformat()), actor=Actor.cli(),
        db=engine, now=clock.now,
    )  # fmt: skip
    campaigns.pause_campaign(settings, scheduled.campaign, actor=Actor.cli(), db=engine)
    spec = approvals.schedule_spec(settings, now=True)
    approvals.request_campaign(
        settings, SLUG, spec, actor=Actor.staff(ROLES["editor"][0]), db=engine
    )
    made = Desk(scheduled.campaign, at, {})
    for role, (email, scope) in ROLES.items():
        enrolled = staff.add_staff(
            settings, email, role=role, scope=scope, password=PASSWORD, actor=Actor.cli(),
            db=engine,
        )  # fmt: skip
        client = TestClient(
            create_admin_app(settings, clock=clock), base_url="https://testserver",
            client=("127.0.0.1", 50000), follow_redirects=False,
        )  # fmt: skip
        client.__enter__()
        made.clients[role] = client
        form = client.get("/admin/login")
        client.post(
            "/admin/login", data={"email": email, "password": PASSWORD, "csrf": csrf(form.text)}
        )
        page = client.get("/admin/login/code")
        code = pyotp.TOTP(enrolled.enrolment.totp_secret).at(clock.now)
        client.post("/admin/login/code", data={"code": code, "csrf": csrf(page.text)})
    yield made
    for client in made.clients.values():
        client.__exit__(None, None, None)


def section(page: str, heading: str) -> str:
    """The text of the section under an h2 id, tags stripped, as a reader would take it in."""
    found = re.search(rf'<h2 id="{heading}">.*?</section>', page, re.S)
    assert found, (heading, page)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found.group(0))).split())


def recipients(engine: Engine, campaign: int, mission: str | None = None) -> int:
    query = (
        "SELECT count(*) FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id "
        "WHERE d.campaign_id = :c" + (" AND s.embassy_code = :m" if mission else "")
    )
    with engine.connect() as conn:
        return int(conn.execute(text(query), {"c": campaign, "m": mission}).scalar_one())


def test_the_dashboard_shows_the_plan_the_pause_reason_and_the_waiting_approval(
    desk: Desk, engine: Engine
) -> None:
    page = desk.page("publisher")
    upcoming = section(page, "next")
    assert desk.at.strftime("%m-%d %H:%M") in upcoming  # Beijing time: given in +08:00
    total = recipients(engine, desk.campaign)
    assert total > 0 and f" {total} " in f" {upcoming} "
    berlin = recipients(engine, desk.campaign, "de-berlin")
    assert f"de-berlin ({berlin})" in upcoming
    assert re.search(r"fr-paris \(\d+\)", upcoming), upcoming

    flight = section(page, "flight")
    assert f"#{desk.campaign} {SLUG}" in flight
    assert "已暂停 Paused" in flight and "原因: paused by staff" in flight
    assert f"排队 Queued: {total} / {total}" in flight

    attention = section(page, "attention")
    assert f"待签发: {SLUG}" in attention and "li.wei@example.org" in attention
    assert "staff.login" in section(page, "recent")
    # An editor sees the approval waiting too: it is their request.
    assert f"待签发: {SLUG}" in section(desk.page("editor"), "attention")


def test_a_liaison_sees_only_their_missions(desk: Desk, engine: Engine) -> None:
    page = desk.page("liaison")
    berlin = recipients(engine, desk.campaign, "de-berlin")
    upcoming = section(page, "next")
    assert f"de-berlin ({berlin})" in upcoming
    assert "fr-paris" not in page
    flight = section(page, "flight")
    assert f"排队 Queued: {berlin} / {berlin}" in flight and "paused by staff" in flight
    assert "待签发:" not in page  # sign-off is not a liaison's business
    activity = section(page, "recent")
    assert "berlin@example.org" in activity
    assert "li.wei@example.org" not in activity and "wang.fang@example.org" not in activity


def test_unknown_rows_and_missions_nobody_reads_need_attention(desk: Desk, engine: Engine) -> None:
    with engine.begin() as conn:
        # The mail server took one Berlin row and never answered: its fate is unknown.
        conn.execute(text(
            "UPDATE delivery SET state = 'unknown' WHERE id = (SELECT min(d.id) FROM delivery d "
            "JOIN subscriber s ON s.id = d.subscriber_id WHERE d.campaign_id = :c "
            "AND s.embassy_code = 'de-berlin')"
        ), {"c": desk.campaign})  # fmt: skip
        unread = [
            str(r[0]) for r in conn.execute(text(
                "SELECT code FROM embassy WHERE code NOT IN "
                "(SELECT embassy_code FROM subscriber WHERE status = 'active') ORDER BY code"
            ))
        ]  # fmt: skip
    assert unread, "the sample lists leave some missions without readers"
    attention = section(desk.page("publisher"), "attention")
    assert f"#{desk.campaign}: 1 行状态未知" in attention
    for code in unread:
        assert f"{code}: 没有在订的订阅者" in attention
    liaison = section(desk.page("liaison"), "attention")
    assert "1 行状态未知" in liaison
    assert not any(code in liaison for code in unread)
