"""An issue's revisions: every import and YAML save is one, listed on the issue's page, each with
a unified diff against the one before, escaped; readers and liaisons see them (issues are not
scoped); GET changes nothing."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from starlette.testclient import TestClient

from newsletter.content.issue_intake import sample_issue_path
from newsletter.models import IssueRevision
from newsletter.services import issue_history
from tests import test_console_issues as issue_pages
from tests.console import Login, csrf, upload

SLUG = "2020-01"
# The issue pages' fixtures: a clock, the engine, and a signed-in browser per role.
clock = issue_pages.clock
engine = issue_pages.engine
login = issue_pages.login


def _yaml(client: TestClient, slug: str = SLUG) -> tuple[str, str]:
    page = client.get(f"/admin/issues/{slug}")
    found = re.search(r'<textarea id="yaml" name="yaml"[^>]*>(.*?)</textarea>', page.text, re.S)
    assert found, page.text
    return csrf(page.text), html.unescape(found.group(1))


def _rows(engine: Engine) -> list[tuple[int, str]]:
    with Session(engine) as session:
        rows = session.exec(select(IssueRevision).order_by(col(IssueRevision.number))).all()
        return [(r.number, r.saved_by) for r in rows]


def test_an_import_and_a_save_are_two_revisions_and_the_diff_shows_the_changed_line(
    login: Login, engine: Engine
) -> None:
    editor = login("editor")
    assert upload(editor, sample_issue_path()).status_code == 303
    token, text = _yaml(editor)
    old_line = next(line for line in text.splitlines() if line.startswith("title_en:"))
    new_line = 'title_en: "Revised <b>title</b> & more"'
    saved = editor.post(
        f"/admin/issues/{SLUG}/yaml", data={"yaml": text.replace(old_line, new_line), "csrf": token}
    )
    assert saved.status_code == 303, saved.text
    assert _rows(engine) == [(1, "staff:li.wei@example.org"), (2, "staff:li.wei@example.org")]

    review = editor.get(f"/admin/issues/{SLUG}")
    assert f'<a href="/admin/issues/{SLUG}/revisions">修订记录</a>' in review.text
    listing = editor.get(f"/admin/issues/{SLUG}/revisions")
    assert listing.status_code == 200
    links = re.findall(rf'href="/admin/issues/{SLUG}/revisions/(\d+)"', listing.text)
    assert links == ["2", "1"]  # newest first
    assert "与第 1 版比较" in listing.text and "首次保存" in listing.text

    diff = editor.get(f"/admin/issues/{SLUG}/revisions/2")
    assert diff.status_code == 200
    body = diff.text
    # The changed line, both ways, escaped: the title's markup is text, not markup.
    assert f'<span class="del">-{html.escape(old_line, quote=True)}</span>' in body
    assert (
        '<span class="add">+title_en: &#34;Revised &lt;b&gt;title&lt;/b&gt; &amp; more&#34;</span>'
        in body
    )
    assert "<b>title</b>" not in body
    assert re.search(r'<span class="hunk">@@ -\d+,\d+ \+\d+,\d+ @@</span>', body)
    changed = re.findall(r'<span class="(add|del)">', body)
    assert changed == ["del", "add"]  # one line changed, nothing else
    assert " style=" not in body and "<style" not in body

    first = editor.get(f"/admin/issues/{SLUG}/revisions/1")
    assert first.status_code == 200 and "无（首次保存）" in first.text
    assert first.text.count('<span class="add">') == len(text.splitlines())
    assert editor.get(f"/admin/issues/{SLUG}/revisions/3").status_code == 404
    assert editor.get("/admin/issues/1999-09/revisions").status_code == 404


@pytest.mark.parametrize("role", ["auditor", "liaison"])
def test_readers_and_liaisons_see_the_revisions_and_reading_changes_nothing(
    login: Login, engine: Engine, role: str
) -> None:
    editor = login("editor")
    upload(editor, sample_issue_path())
    reader = login(role)
    before = _rows(engine)
    listing = reader.get(f"/admin/issues/{SLUG}/revisions")
    assert listing.status_code == 200 and "staff:li.wei@example.org" in listing.text
    diff = reader.get(f"/admin/issues/{SLUG}/revisions/1")
    assert diff.status_code == 200 and '<span class="add">+' in diff.text
    assert reader.post(f"/admin/issues/{SLUG}/revisions/1").status_code == 405
    assert _rows(engine) == before == [(1, "staff:li.wei@example.org")]


def test_the_diff_of_two_texts_is_difflib_unified() -> None:
    lines = issue_history.unified("a\nb\nc\n", "a\nB\nc\n", "x #1", "x #2")
    assert [(line.kind, line.text) for line in lines] == [
        ("file", "--- x #1"),
        ("file", "+++ x #2"),
        ("hunk", "@@ -1,3 +1,3 @@"),
        ("same", " a"),
        ("del", "-b"),
        ("add", "+B"),
        ("same", " c"),
    ]
    assert issue_history.unified("same\n", "same\n", "a", "b") == ()
