"""The console's audit page: who sees which events (a liaison only their own, an editor
nothing), the filters and paging in the query string, the formula-safe CSV export, and the
chain check after a row was changed in SQL; through the real app on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select
from starlette.testclient import TestClient

from newsletter.actors import Actor
from newsletter.console import create_admin_app
from newsletter.db import make_engine
from newsletter.models import AdminEvent
from newsletter.services import audit, staff
from newsletter.services.units import unit_of_work
from tests.conftest import Clock, Instance, drop_chain_guards
from tests.console import PASSWORD, open_console, sign_in

STAFF = {
    "admin": ("admin@example.org", ()),
    "publisher": ("zhang.min@example.org", ()),
    "editor": ("li.wei@example.org", ()),
    "auditor": ("audit@example.org", ()),
    "list-manager": ("lists@example.org", ()),
    "liaison": ("berlin@example.org", ("de-berlin",)),
}
Login = Callable[[str], TestClient]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(instance: Instance) -> Iterator[Engine]:
    made = make_engine(instance.settings.resolved_database_url)
    yield made
    made.dispose()


@pytest.fixture
def login(instance: Instance, clock: Clock, engine: Engine) -> Iterator[Login]:
    clients: list[TestClient] = []

    def signed_in(role: str) -> TestClient:
        email, scope = STAFF[role]
        enrolled = staff.add_staff(
            instance.settings, email, role=role, scope=scope, password=PASSWORD,
            actor=Actor.cli(), db=engine,
        )  # fmt: skip
        client = open_console(instance.settings, clock)
        clients.append(client)
        sign_in(client, email, enrolled.enrolment.totp_secret, clock)
        return client

    yield signed_in
    for client in clients:
        client.__exit__(None, None, None)


def record(
    instance: Instance, engine: Engine, action: str, *, mission: str = "", target: str = "",
    at: dt.datetime | None = None, actor: Actor | None = None,
) -> None:  # fmt: skip
    with unit_of_work(instance.settings, engine) as session:
        audit.record(
            session, actor or Actor.system("scheduler", "scheduler"), action, target=target,
            mission=mission, at=at,
        )  # fmt: skip


def rows(page: str) -> list[list[str]]:
    """The events table as a reader sees it: one list of cell texts per event row."""
    found = re.findall(r'<tr class="event">(.*?)</tr>', page, re.S)
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", r, re.S)] for r in found
    ]


def actions(page: str) -> list[str]:
    return [r[3] for r in rows(page)]


def events(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as session:
        query = select(AdminEvent).order_by(col(AdminEvent.id))
        return [e.model_dump() for e in session.exec(query)]


@pytest.mark.parametrize("role", ["admin", "publisher", "auditor", "list-manager"])
def test_roles_with_the_audit_log_see_every_event(
    login: Login, instance: Instance, engine: Engine, role: str
) -> None:
    record(instance, engine, "plan.fired", mission="de-berlin")
    record(instance, engine, "plan.fired", mission="fr-paris")
    client = login(role)
    page = client.get("/admin/audit")
    assert page.status_code == 200, page.text
    missions = [r[5] for r in rows(page.text) if r[3] == "plan.fired"]
    assert sorted(missions) == ["de-berlin", "fr-paris"]
    assert "staff.login" in actions(page.text)
    assert 'href="/admin/audit/verify"' in page.text


def test_a_liaison_sees_only_their_own_actions(
    login: Login, instance: Instance, engine: Engine
) -> None:
    record(instance, engine, "plan.fired", mission="de-berlin")
    other = login("editor")  # someone else's login, not the liaison's to read
    liaison = login("liaison")
    page = liaison.get("/admin/audit")
    assert page.status_code == 200
    assert "只显示你本人的操作。" in page.text
    seen = rows(page.text)
    assert seen and all(r[2] == "staff:berlin@example.org" for r in seen), seen
    assert "plan.fired" not in actions(page.text)
    exported = list(csv.reader(io.StringIO(liaison.get("/admin/audit.csv").text.lstrip("\ufeff"))))
    assert {r[2] for r in exported[1:]} == {"staff:berlin@example.org"}
    # Asking for another's events by name gives nothing, not them.
    assert rows(liaison.get("/admin/audit?actor=staff:li.wei@example.org").text) == []
    assert liaison.get("/admin/audit/verify").status_code == 403
    assert other.get("/admin/audit").status_code == 403


def test_an_editor_is_refused_every_audit_route(login: Login) -> None:
    editor = login("editor")
    for path in ("/admin/audit", "/admin/audit.csv", "/admin/audit/verify"):
        refused = editor.get(path)
        assert refused.status_code == 403, path
        assert "Your role does not allow this" in refused.text
        assert "staff.login" not in refused.text


def test_signed_out_the_audit_page_sends_to_the_login(instance: Instance, clock: Clock) -> None:
    app = create_admin_app(instance.settings, clock=clock)
    with TestClient(app, base_url="https://testserver", client=("127.0.0.1", 50000),
                    follow_redirects=False) as client:  # fmt: skip
        for path in ("/admin/audit", "/admin/audit.csv", "/admin/audit/verify"):
            assert client.get(path).headers["location"] == "/admin/login"


def test_filters_by_actor_action_target_mission_and_date(
    login: Login, instance: Instance, engine: Engine, clock: Clock
) -> None:
    day = dt.timedelta(days=1)
    record(
        instance, engine, "plan.fired", mission="de-berlin", target="plan:1", at=clock.now - 3 * day
    )
    record(instance, engine, "plan.missed", mission="fr-paris", target="plan:2", at=clock.now - day)
    record(instance, engine, "campaign.paused", mission="de-berlin", target="campaign:7",
           at=clock.now - day, actor=Actor.staff("zhang.min@example.org"))  # fmt: skip
    auditor = login("auditor")

    def seen(query: str) -> list[str]:
        page = auditor.get(f"/admin/audit?{query}")
        assert page.status_code == 200, page.text
        return sorted(r[3] + "@" + r[5] for r in rows(page.text) if r[3] != "staff.login")

    assert seen("action=plan") == ["plan.fired@de-berlin", "plan.missed@fr-paris"]
    assert seen("mission=de-berlin") == ["campaign.paused@de-berlin", "plan.fired@de-berlin"]
    assert seen("target=campaign:7") == ["campaign.paused@de-berlin"]
    assert seen("actor=staff:zhang.min@example.org") == ["campaign.paused@de-berlin"]
    assert seen("actor=zhang.min") == ["campaign.paused@de-berlin"]
    yesterday = (clock.now - day).date().isoformat()
    assert seen(f"since={yesterday}&until={yesterday}") == [
        "campaign.paused@de-berlin", "plan.missed@fr-paris"
    ]  # fmt: skip
    assert seen(f"until={(clock.now - 2 * day).date().isoformat()}") == ["plan.fired@de-berlin"]
    # The filters stay in the form, so the next search starts from them.
    page = auditor.get("/admin/audit?mission=de-berlin&action=plan").text
    assert 'name="mission" value="de-berlin"' in page and 'name="action" value="plan"' in page
    bad = auditor.get("/admin/audit?since=27.11.2026")
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text


def test_paging_is_done_by_the_server(login: Login, instance: Instance, engine: Engine) -> None:
    auditor = login("auditor")
    for n in range(110):
        record(instance, engine, "plan.fired", mission="de-berlin", target=f"plan:{n}")
    total = len(events(engine))  # with the staff account's and login's own events
    assert 110 < total <= 150
    first = auditor.get("/admin/audit").text
    assert f"共 {total} 条" in first and "第 1 / 3 页" in first
    assert len(rows(first)) == 50 and rows(first)[0][4] == "plan:109"
    assert 'href="/admin/audit?page=2"' in first and 'rel="prev"' not in first
    last = auditor.get("/admin/audit?page=3").text
    assert len(rows(last)) == total - 100 and 'rel="next"' not in last
    filtered = auditor.get("/admin/audit?action=plan.fired&page=3").text
    assert "共 110 条" in filtered and [r[4] for r in rows(filtered)] == [
        f"plan:{n}" for n in range(9, -1, -1)
    ]  # fmt: skip
    assert 'href="/admin/audit?action=plan.fired&amp;page=2" rel="prev"' in filtered


def test_the_export_is_formula_safe(login: Login, instance: Instance, engine: Engine) -> None:
    for target in ('=HYPERLINK("http://evil")', "+1+1", "-2", "@SUM(A1)", "plan:9"):
        record(instance, engine, "plan.fired", mission="de-berlin", target=target)
    auditor = login("auditor")
    export = auditor.get("/admin/audit.csv?action=plan.fired")
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(export.text.lstrip("\ufeff"))))
    assert table[0][:5] == ["id", "at", "actor", "via", "action"]
    targets = sorted(r[5] for r in table[1:])
    assert targets == sorted(['\'=HYPERLINK("http://evil")', "'+1+1", "'-2", "'@SUM(A1)", "plan:9"])
    for line in table[1:]:
        assert not any(cell[:1] in "=+-@" for cell in line if cell), line


def test_verify_shows_intact_then_the_first_changed_event(
    login: Login, instance: Instance, engine: Engine
) -> None:
    for n in range(3):
        record(instance, engine, "plan.fired", mission="de-berlin", target=f"plan:{n}")
    auditor = login("auditor")
    before = events(engine)
    intact = auditor.get("/admin/audit/verify")
    assert intact.status_code == 200
    assert f"哈希链完整：{len(before)} 条事件。" in intact.text
    assert events(engine) == before  # a check reads; it writes nothing

    changed = next(e["id"] for e in before if e["target"] == "plan:1")
    drop_chain_guards(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE admin_event SET mission = 'fr-paris' WHERE id = :id"),
                     {"id": changed})  # fmt: skip
    broken = auditor.get("/admin/audit/verify").text
    assert f"哈希链已断开：第一个不符的事件是 #{changed}。" in broken
    assert "the event was changed" in broken
    assert "哈希链完整" not in broken
