"""Chinese first, English on a toggle: `lang` on every console page, the choice kept per person
across logins and audited, the toggle's CSRF, and an English entry for every template string."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from babel.messages import pofile
from babel.messages.extract import extract_from_dir
from sqlalchemy import Engine
from sqlmodel import Session, select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from newsletter.actors import Actor
from newsletter.console import i18n
from newsletter.db import make_engine
from newsletter.models import AdminEvent, StaffUser
from newsletter.render.environment import default_templates_dir
from newsletter.services import staff
from tests.conftest import Clock, Instance, load_sample
from tests.console import PASSWORD, csrf, open_console, sign_in

EDITOR = "li.wei@example.org"
SLUG = "2020-01"
# Each page an editor reaches with the sample issue, and a label it shows in either language.
PAGES = {
    "/admin": ("首页", "Dashboard"),
    "/admin/issues": ("已导入的期刊", "Imported issues"),
    "/admin/issues/import": ("期刊文件", "Issue file"),
    f"/admin/issues/{SLUG}": ("编辑 YAML", "Edit the YAML"),
    f"/admin/issues/{SLUG}/preview": ("以谁的身份", "As whom"),
    "/admin/approvals": ("待签发", "Waiting"),
    f"/admin/campaigns/new?issue={SLUG}": ("选择一种", "Choose one"),
    "/admin/stepup?next=/admin/approvals": ("再次验证", "Confirm it is you"),
    f"/admin/issues/{SLUG}/revisions": ("保存人", "Saved by"),
    f"/admin/issues/{SLUG}/revisions/1": ("比较对象", "Compared with"),
}
Login = Callable[[], TestClient]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(instance: Instance) -> Iterator[Engine]:
    made = make_engine(instance.settings.resolved_database_url)
    yield made
    made.dispose()


@pytest.fixture
def log_in(instance: Instance, clock: Clock, engine: Engine) -> Iterator[Login]:
    """A new browser signed in as the editor each time it is called (one account)."""
    enrolled = staff.add_staff(
        instance.settings, EDITOR, role="editor", password=PASSWORD, actor=Actor.cli(), db=engine
    )
    clients: list[TestClient] = []

    def signed_in() -> TestClient:
        clock.advance(minutes=1)  # a fresh TOTP step: a code is good once
        client = open_console(instance.settings, clock)
        clients.append(client)
        sign_in(client, EDITOR, enrolled.enrolment.totp_secret, clock)
        return client

    yield signed_in
    for client in clients:
        client.__exit__(None, None, None)


def toggle(html: str) -> dict[str, str]:
    """The language form's fields, as the page carries them."""
    found = re.search(r'<form method="post" action="/admin/account/locale".*?</form>', html, re.S)
    assert found, html
    form = found.group(0)
    fields = dict(re.findall(r'name="(csrf|next)" value="([^"]*)"', form))
    fields["locale"] = re.findall(r'name="locale" value="([a-z]+)"', form)[0]
    return fields


def locale_of(engine: Engine) -> str:
    with Session(engine) as session:
        user = session.exec(select(StaffUser).where(StaffUser.email == EDITOR)).one()
        return user.locale


def test_chinese_by_default_english_after_the_toggle_on_every_page_and_after_a_new_login(
    log_in: Login, instance: Instance, runner: CliRunner, engine: Engine
) -> None:
    load_sample(runner, instance)
    editor = log_in()
    for path, (chinese, english) in PAGES.items():
        page = editor.get(path)
        assert page.status_code == 200, (path, page.text)
        assert '<html lang="zh-CN">' in page.text, path
        assert chinese in page.text and english not in page.text, path
        assert (
            '<button type="submit" name="locale" value="en" lang="en">English</button>' in page.text
        )

    issues = editor.get("/admin/issues")
    switched = editor.post("/admin/account/locale", data=toggle(issues.text))
    assert (switched.status_code, switched.headers["location"]) == (303, "/admin/issues")
    assert locale_of(engine) == "en"
    for path, (chinese, english) in PAGES.items():
        page = editor.get(path)
        assert '<html lang="en">' in page.text, path
        assert english in page.text and chinese not in page.text, path
        assert '<a href="/admin/issues">Issues</a>' in page.text, path
        assert 'value="zh" lang="zh-CN">中文</button>' in page.text, path

    again = log_in()  # another browser, another session: the account keeps the choice
    home = again.get("/admin")
    assert '<html lang="en">' in home.text and "Signed in as" in home.text
    back = again.post("/admin/account/locale", data=toggle(home.text))
    assert back.headers["location"] == "/admin"
    assert '<html lang="zh-CN">' in again.get("/admin").text

    with Session(engine) as session:
        events = session.exec(select(AdminEvent).where(AdminEvent.action == "staff.locale")).all()
    assert [(e.actor_id, e.target, e.via) for e in events] == [
        (EDITOR, f"staff:{EDITOR}", events[0].via)
    ] * 2
    assert len({e.via for e in events}) == 1


def test_the_toggle_needs_its_own_valid_token_and_a_known_language(
    log_in: Login, engine: Engine
) -> None:
    editor = log_in()
    fields = toggle(editor.get("/admin").text)
    for token in ("", "forged" * 5, csrf(editor.get("/admin/issues/import").text)):
        refused = editor.post("/admin/account/locale", data={**fields, "csrf": token})
        assert refused.status_code == 403, token
    assert editor.get("/admin/account/locale").status_code == 405
    unknown = editor.post("/admin/account/locale", data={**fields, "locale": "fr"})
    assert unknown.status_code == 400
    assert "unknown console language 'fr'" in html.unescape(unknown.text)
    assert locale_of(engine) == "zh"
    # Elsewhere after the switch is only ever a console page.
    away = editor.post("/admin/account/locale", data={**fields, "next": "//evil.example/admin"})
    assert (away.headers["location"], locale_of(engine)) == ("/admin", "en")


def test_the_english_catalogue_translates_every_template_string() -> None:
    """Every {% trans %} and _() of templates/admin has a non-empty English entry."""
    folder = default_templates_dir() / "admin"
    found = {
        (context or "", message if isinstance(message, str) else message[0])
        for _, _, message, _, context in extract_from_dir(
            str(folder), [("**.j2", "jinja2")], {"**.j2": {"extensions": "jinja2.ext.i18n"}}
        )
    }
    assert len(found) > 150
    with i18n.po_path("en").open("rb") as po:
        catalogue = pofile.read_po(po, locale="en")
    missing = sorted(
        k for k in found if not (m := catalogue.get(k[1], k[0] or None)) or not m.string
    )
    assert missing == []
    # And the page gets them: the compiled catalogue answers in English.
    english = i18n.translations("en")
    assert english.pgettext("plural", "期刊") == "Issues"
    assert english.gettext("第 %(line)s 行") == "line %(line)s"


def test_no_template_keeps_a_bilingual_label() -> None:
    """The old 中文 <span lang="en">English</span> labels are gone from the converted pages."""
    folder = Path(default_templates_dir()) / "admin"
    bilingual = [
        p.name
        for p in folder.glob("*.j2")
        # an English label after a Chinese one; English data (an issue's English title) may stay
        if re.search(r'[\u4e00-\u9fff][^<>]*<span lang="en">[^{<]', p.read_text())
    ]
    assert bilingual == []
