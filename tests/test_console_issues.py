"""The console's editorial pages: issues list and import, the review page and its YAML editor,
the preview and the test send; every route by role through TestClient against the real app on
SQLite and PostgreSQL, the test send through a real SMTP server."""

from __future__ import annotations

import email
import email.policy
import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from newsletter import credentials
from newsletter.actors import Actor, Scope
from newsletter.config import Settings
from newsletter.console import create_admin_app
from newsletter.console.security import CSP
from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import make_engine
from newsletter.models import AdminEvent, Delivery, IssueRecord, ItemRecord
from newsletter.services import staff, subscribers
from newsletter.testing.sink import LoopbackController
from tests.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import IN_CI, LISTS, Clock, Instance, cli, send_sample
from tests.console import PASSWORD, Login, csrf, hidden, open_console, sign_in, upload

SEED = Path(__file__).parent / "fixtures" / "kjcxsd-2020-01.txt"
STAFF = {
    "editor": ("li.wei@example.org", ()),
    "auditor": ("audit@example.org", ()),
    "list-manager": ("lists@example.org", ()),
    "liaison": ("berlin@example.org", ("de-berlin",)),
}


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
    """A signed-in browser for a role (its account made on first use)."""
    clients: list[TestClient] = []

    def signed_in(role: str, settings: Settings | None = None) -> TestClient:
        email, scope = STAFF[role]
        enrolled = staff.add_staff(
            instance.settings, email, role=role, scope=scope, password=PASSWORD,
            actor=Actor.cli(), db=engine,
        )  # fmt: skip
        client = open_console(settings or instance.settings, clock)
        clients.append(client)
        sign_in(client, email, enrolled.enrolment.totp_secret, clock)
        return client

    yield signed_in
    for client in clients:
        client.__exit__(None, None, None)


def genuine_token(client: TestClient, form: str) -> str:
    """A valid token of `form` for this browser and session, as a page with that form would
    carry: what a reader could get by any means, so the role, not CSRF, must refuse them."""
    client.get("/admin/login")  # the nonce cookie, when no page set it yet
    state = client.app.state.console  # type: ignore[attr-defined]
    session = credentials.token_hash(client.cookies["__Host-nl_admin"])
    token: str = state.csrf.token(form, client.cookies["__Host-nl_admin_csrf"], session)
    return token


def snapshot(engine: Engine) -> tuple[Any, ...]:
    """Everything an issue page could change: issues, items, audit events."""
    with Session(engine) as session:
        return (
            [r.model_dump() for r in session.exec(select(IssueRecord).order_by(col(IssueRecord.id)))],
            [r.model_dump() for r in session.exec(select(ItemRecord).order_by(col(ItemRecord.id)))],
            [e.model_dump() for e in session.exec(select(AdminEvent).order_by(col(AdminEvent.id)))],
        )  # fmt: skip


def slugs(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.exec(select(IssueRecord.slug)).all())


def import_seed(client: TestClient) -> Any:
    """The journal's text: warnings shown first, stored once confirmed; the 303 to its page."""
    report = upload(client, SEED)
    assert report.status_code == 200, report.text
    return client.post(
        "/admin/issues/import",
        data={
            "csrf": csrf(report.text), "carried": hidden(report.text, "carried"),
            "source": hidden(report.text, "source"),
        },
    )  # fmt: skip


# --- 1. the list and the import -------------------------------------------------------------


def test_an_editor_imports_the_journal_text_after_seeing_the_warnings_beside_their_lines(
    login: Login, engine: Engine
) -> None:
    editor = login("editor")
    listing = editor.get("/admin/issues")
    assert listing.status_code == 200 and "还没有导入任何期刊" in listing.text
    assert '<html lang="zh-CN">' in listing.text
    form = editor.get("/admin/issues/import")
    assert '<label for="file">期刊文件</label>' in form.text
    report = upload(editor, SEED)
    assert report.status_code == 200
    assert "请核对转换提示" in report.text and "尚未保存" in report.text
    lines = SEED.read_text(encoding="utf-8").splitlines()
    # The first page-break warning, beside the line of the text it is about.
    assert "第 83 行" in report.text
    assert "across a page break" in report.text
    assert f'<span class="lineno">83</span> {lines[82].strip()[:20]}' in report.text
    assert slugs(engine) == []  # shown, not stored

    done = editor.post(
        "/admin/issues/import",
        data={
            "csrf": csrf(report.text), "carried": hidden(report.text, "carried"),
            "source": hidden(report.text, "source"),
        },
    )  # fmt: skip
    assert done.status_code == 303
    assert done.headers["location"].startswith("/admin/issues/2020-01?imported=")
    assert slugs(engine) == ["2020-01"]
    shown = editor.get("/admin/issues").text
    assert 'href="/admin/issues/2020-01"' in shown
    assert "未发送" in shown and "China S&amp;T Innovation Express" in shown


def test_a_yaml_file_without_warnings_is_stored_at_once(login: Login, engine: Engine) -> None:
    editor = login("editor")
    done = upload(editor, sample_issue_path())
    assert done.status_code == 303
    assert done.headers["location"].startswith("/admin/issues/2020-01?imported=")
    assert slugs(engine) == ["2020-01"]
    page = editor.get(done.headers["location"])
    assert page.status_code == 200 and "已导入" in page.text


def test_bad_yaml_gives_one_message_with_its_line_and_stores_nothing(
    login: Login, engine: Engine
) -> None:
    editor = login("editor")
    text = sample_issue_path().read_text(encoding="utf-8")
    broken = text.replace("year: 2020", "year: twenty", 1)
    line = text.splitlines().index("year: 2020") + 1
    answer = upload(editor, sample_issue_path(), broken.encode())
    assert answer.status_code == 422
    assert answer.text.count('class="error"') == 1
    assert f"第 {line} 行" in answer.text and "year" in answer.text
    assert "未保存任何内容" in answer.text
    not_yaml = upload(editor, SEED, b"%PDF-1.7 binary")
    assert not_yaml.status_code == 422 and "PDF" in not_yaml.text
    assert slugs(engine) == []


@pytest.mark.parametrize("role", ["auditor", "list-manager", "liaison"])
def test_readers_see_the_list_but_cannot_import(login: Login, engine: Engine, role: str) -> None:
    editor = login("editor")
    assert import_seed(editor).status_code == 303
    reader = login(role)
    listing = reader.get("/admin/issues")
    assert listing.status_code == 200 and "2020-01" in listing.text
    assert "/admin/issues/import" not in listing.text  # no link to what they cannot do
    assert reader.get("/admin/issues/import").status_code == 403
    before = snapshot(engine)
    # Even with a form token of their own session, the POST is refused and stores nothing.
    token = genuine_token(reader, "issue-import")
    refused = reader.post(
        "/admin/issues/import", data={"csrf": token},
        files={"file": ("x.yaml", sample_issue_path().read_bytes(), "text/plain")},
    )  # fmt: skip
    assert refused.status_code == 403
    assert snapshot(engine) == before


def test_signed_out_pages_send_to_the_login(instance: Instance, clock: Clock) -> None:
    app = create_admin_app(instance.settings, clock=clock)
    peer = ("127.0.0.1", 50000)
    with TestClient(
        app, base_url="https://testserver", client=peer, follow_redirects=False
    ) as client:
        for path in ("/admin/issues", "/admin/issues/import", "/admin/issues/2020-01"):
            assert client.get(path).headers["location"] == "/admin/login"


def test_a_missing_or_forged_csrf_token_changes_nothing(login: Login, engine: Engine) -> None:
    editor = login("editor")
    before = snapshot(engine)
    for token in ("", "forged" * 5):
        refused = editor.post(
            "/admin/issues/import", data={"csrf": token},
            files={"file": ("x.yaml", sample_issue_path().read_bytes(), "text/plain")},
        )  # fmt: skip
        assert refused.status_code == 403 and "表单已过期" in refused.text
    assert snapshot(engine) == before


# --- 2. the issue page and its YAML editor ---------------------------------------------------


def yaml_form(client: TestClient, slug: str = "2020-01") -> tuple[str, str]:
    page = client.get(f"/admin/issues/{slug}")
    assert page.status_code == 200, page.text
    found = re.search(r'<textarea id="yaml" name="yaml"[^>]*>(.*?)</textarea>', page.text, re.S)
    assert found, page.text
    return csrf(page.text), html.unescape(found.group(1))


def test_the_issue_page_shows_items_by_section_with_sector_chips_and_their_keywords(
    login: Login,
) -> None:
    editor = login("editor")
    assert import_seed(editor).status_code == 303
    page = editor.get("/admin/issues/2020-01").text
    for section in ("政策 Policy", "科研 Research", "聚焦 Focus"):
        assert f"<h2>{section}</h2>" in page
    assert page.index("政策 Policy") < page.index("聚焦 Focus")
    # A chip names the sector and the words the importer found behind it.
    assert re.search(
        r'<span class="chip">[^<]*集成电路[^<]*<small class="why">keyword: 集成电路 \(4×\)', page
    )
    assert "候选（未标注）" in page and "keyword: 产业化 (1×)" in page
    assert "每期必发" in page  # the focus article goes to every reader
    assert re.search(r'<span class="chip region">\w+ <small class="why">named: ', page)
    assert 'href="/admin/issues/2020-01/preview"' in page


def test_an_edit_is_validated_saved_and_audited(login: Login, engine: Engine) -> None:
    editor = login("editor")
    upload(editor, sample_issue_path())
    token, text = yaml_form(editor)
    edited = re.sub(r"(?m)^(\s+title: )(.*)$", r"\1改过的标题", text, count=1)
    saved = editor.post("/admin/issues/2020-01/yaml", data={"yaml": edited, "csrf": token})
    assert (saved.status_code, saved.headers["location"]) == (303, "/admin/issues/2020-01?saved=1")
    page = editor.get(saved.headers["location"]).text
    assert "已保存" in page and "<h3>改过的标题" in page
    with Session(engine) as session:
        events = session.exec(select(AdminEvent).where(AdminEvent.action == "issue.edited")).all()
    assert [(e.actor_id, e.via, e.target) for e in events] == [
        ("li.wei@example.org", "console", "issue:2020-01")
    ]


def test_a_broken_edit_names_its_line_and_keeps_the_stored_issue(
    login: Login, engine: Engine
) -> None:
    editor = login("editor")
    upload(editor, sample_issue_path())
    token, text = yaml_form(editor)
    before = snapshot(engine)
    lines = text.split("\n")
    sector_line = next(i for i, line in enumerate(lines) if re.match(r"^\s+sectors: ?\[?", line))
    lines[sector_line] = re.sub(r"sectors:.*", "sectors: [no-such-sector]", lines[sector_line])
    answer = editor.post(
        "/admin/issues/2020-01/yaml", data={"yaml": "\n".join(lines), "csrf": token}
    )
    assert answer.status_code == 422
    assert f"第 {sector_line + 1} 行" in answer.text and "no-such-sector" in answer.text
    assert "未保存" in answer.text
    assert "no-such-sector" in answer.text.split("<textarea", 1)[1]  # the edit is kept to fix
    syntax = editor.post(
        "/admin/issues/2020-01/yaml",
        data={"yaml": text.replace("items:", "items: [", 1), "csrf": token},
    )
    assert syntax.status_code == 422 and "YAML syntax error" in syntax.text
    renamed = editor.post(
        "/admin/issues/2020-01/yaml",
        data={"yaml": text.replace("number: 1\n", "number: 2\n", 1), "csrf": token},
    )
    assert renamed.status_code == 422 and "2020-02" in renamed.text
    assert snapshot(engine) == before
    assert slugs(engine) == ["2020-01"]


def test_a_sent_issue_is_locked(
    login: Login, engine: Engine, instance: Instance, runner: CliRunner
) -> None:
    editor = login("editor")
    upload(editor, sample_issue_path())
    token, text = yaml_form(editor)
    cli(runner, instance, "subscribers", "import", str(LISTS))
    assert send_sample(instance.settings).sent > 0
    page = editor.get("/admin/issues/2020-01").text
    assert "已发送，内容已锁定" in page and 'name="yaml"' not in page and "readonly" in page
    assert "已发送" in editor.get("/admin/issues").text
    before = snapshot(engine)
    refused = editor.post("/admin/issues/2020-01/yaml", data={"yaml": text, "csrf": token})
    assert refused.status_code == 422 and "already been sent" in refused.text
    again = upload(editor, sample_issue_path())
    assert again.status_code == 422 and "already been sent" in again.text
    assert snapshot(engine) == before


@pytest.mark.parametrize("role", ["auditor", "list-manager", "liaison"])
def test_readers_see_the_issue_but_cannot_save(login: Login, engine: Engine, role: str) -> None:
    editor = login("editor")
    upload(editor, sample_issue_path())
    reader = login(role)
    page = reader.get("/admin/issues/2020-01")
    main = page.text.split('<footer class="foot">')[0]  # the footer's language toggle aside
    assert page.status_code == 200 and "readonly" in main and "<form" not in main
    before = snapshot(engine)
    refused = reader.post(
        "/admin/issues/2020-01/yaml",
        data={"yaml": "publication: x", "csrf": genuine_token(reader, "issue-yaml")},
    )
    assert refused.status_code == 403
    assert snapshot(engine) == before


def test_a_get_never_changes_state(login: Login, engine: Engine) -> None:
    editor = login("editor")
    upload(editor, sample_issue_path())
    before = snapshot(engine)
    for path in (
        "/admin/issues", "/admin/issues/import", "/admin/issues/2020-01",
        "/admin/issues/2020-01/yaml", "/admin/issues/nope",
    ):  # fmt: skip
        assert editor.get(path).status_code in {200, 404, 405}
    assert snapshot(engine) == before


def test_forged_tokens_save_nothing(login: Login, engine: Engine) -> None:
    editor = login("editor")
    upload(editor, sample_issue_path())
    token, text = yaml_form(editor)
    before = snapshot(engine)
    for forged in ("", "forged" * 5, genuine_token(editor, "issue-import")):
        refused = editor.post("/admin/issues/2020-01/yaml", data={"yaml": text, "csrf": forged})
        assert refused.status_code == 403
    elsewhere = {"origin": "https://evil.example"}
    refused = editor.post(
        "/admin/issues/2020-01/yaml", data={"yaml": text, "csrf": token}, headers=elsewhere
    )
    assert refused.status_code == 403
    assert snapshot(engine) == before


# --- 3. the preview -------------------------------------------------------------------------


@pytest.fixture
def lists(instance: Instance, runner: CliRunner) -> None:
    cli(runner, instance, "subscribers", "import", str(LISTS))


BERLIN_AI = "chen.hao@de-berlin.example.org"  # sectors ai, robotics, software


def iframe(page: str) -> str:
    found = re.search(r"<iframe [^>]*>", page)
    assert found, page
    return found.group(0)


def test_an_editor_previews_as_a_berlin_ai_reader_with_the_why_panel(
    login: Login, lists: None
) -> None:
    editor = login("editor")
    upload(editor, sample_issue_path())
    page = editor.get(f"/admin/issues/2020-01/preview?subscriber={BERLIN_AI}")
    assert page.status_code == 200, page.text
    frame = iframe(page.text)
    assert 'sandbox=""' in frame and "allow-scripts" not in frame
    # The digest is its own document, under a CSP of its own that lets its inline styles
    # apply (a srcdoc frame would inherit the console's, which refuses them).
    src = html.unescape(re.search(r'src="([^"]+)"', frame).group(1))  # type: ignore[union-attr]
    digest = editor.get(src)
    assert digest.status_code == 200 and "<html" in digest.text and "style=" in digest.text
    policy = digest.headers["content-security-policy"]
    assert "style-src 'unsafe-inline'" in policy and "frame-ancestors 'self'" in policy
    assert "script-src" not in policy and digest.headers["x-frame-options"] == "SAMEORIGIN"
    assert login("auditor").get(src).status_code == 200
    liaison = login("liaison")  # Berlin's: Berlin's reader, never Paris's
    assert liaison.get(src).status_code == 200
    paris = src.replace(BERLIN_AI.replace("@", "%40"), "ma.li%40fr-paris.example.org")
    assert paris != src and editor.get(paris).status_code == 200
    outside = liaison.get(paris)
    assert outside.status_code == 404 and "style=" not in outside.text
    assert 'class="digest w390"' in frame  # phone first
    assert "订阅者 " + BERLIN_AI in page.text
    assert "ai, robotics, software" in page.text
    assert "included: matches sectors" in page.text and "不收录" in page.text
    assert "KB / 102 KB" in page.text
    # Width and tab are links that reload the page: no script needed.
    for width in ("360", "390", "600", "full"):
        assert f"width={width}" in page.text
    narrow = editor.get(f"/admin/issues/2020-01/preview?subscriber={BERLIN_AI}&width=360")
    assert 'class="digest w360"' in iframe(narrow.text)
    text = editor.get(f"/admin/issues/2020-01/preview?subscriber={BERLIN_AI}&tab=text").text
    assert '<pre class="digest-text">' in text and "<iframe" not in text
    headers = editor.get(f"/admin/issues/2020-01/preview?subscriber={BERLIN_AI}&tab=headers").text
    assert "<dt>Subject</dt>" in headers and "<dt>List-Unsubscribe</dt>" in headers
    assert f"&lt;{BERLIN_AI}&gt;" in headers or BERLIN_AI in headers


def test_the_eml_download_is_the_message_with_links_that_change_nobody(
    login: Login, lists: None, instance: Instance
) -> None:
    editor = login("editor")
    upload(editor, sample_issue_path())
    eml = editor.get(f"/admin/issues/2020-01/preview.eml?subscriber={BERLIN_AI}")
    assert eml.status_code == 200
    assert eml.headers["content-type"] == "message/rfc822"
    assert "attachment" in eml.headers["content-disposition"]
    message = email.message_from_bytes(eml.content, policy=email.policy.default)
    assert BERLIN_AI in str(message["To"])
    unsubscribe = re.search(r"/unsubscribe/([^>\s]+)>", str(message["List-Unsubscribe"]))
    assert unsubscribe
    # The token verifies as genuine but names nobody: the subscriber's own key is not in it.
    from newsletter.web import create_app

    with TestClient(create_app(instance.settings), follow_redirects=False) as public:
        answer = public.post(
            f"/unsubscribe/{unsubscribe.group(1)}", data={"List-Unsubscribe": "One-Click"}
        )
    assert answer.status_code == 400 and "链接无效" in answer.text  # it names nobody
    shown = cli(CliRunner(), instance, "subscribers", "show", BERLIN_AI)
    assert "active" in shown


def test_a_synthetic_audience_is_previewed_and_explained(login: Login) -> None:
    editor = login("editor")
    upload(editor, sample_issue_path())
    page = editor.get("/admin/issues/2020-01/preview?mission=de-berlin&sectors=ai&language=en")
    assert page.status_code == 200, page.text
    assert "模拟读者" in page.text
    assert "de-berlin · en" in page.text
    assert 'value="ai" checked' in page.text
    whole = editor.get("/admin/issues/2020-01/preview")
    assert whole.status_code == 200 and "included: " in whole.text
    assert "不收录" not in whole.text  # the whole issue leaves nothing out
    bad = editor.get("/admin/issues/2020-01/preview?mission=de-berlin&sectors=nonsense")
    assert bad.status_code == 422 and "unknown sector nonsense" in bad.text
    assert editor.get("/admin/issues/nope/preview").status_code == 404


def test_a_liaison_previews_only_as_readers_of_their_missions(login: Login, lists: None) -> None:
    editor = login("editor")
    upload(editor, sample_issue_path())
    liaison = login("liaison")
    own = liaison.get(f"/admin/issues/2020-01/preview?subscriber={BERLIN_AI}")
    assert own.status_code == 200 and "<iframe" in own.text
    paris = "fr-paris"
    someone = next(
        line.split(",")[0]
        for line in (LISTS / f"{paris}.csv").read_text(encoding="utf-8").splitlines()[1:]
        if line.strip()
    )
    other = liaison.get(f"/admin/issues/2020-01/preview?subscriber={someone}")
    assert other.status_code == 404 and "<iframe" not in other.text
    assert "No such subscriber in your missions" in other.text
    assert liaison.get(f"/admin/issues/2020-01/preview.eml?subscriber={someone}").status_code == 404
    assert liaison.get(f"/admin/issues/2020-01/preview?mission={paris}").status_code == 404
    # A search finds Berlin's people and nobody else's, whatever is typed.
    search = liaison.get("/admin/issues/2020-01/preview?q=example.org").text
    assert "de-berlin.example.org" in search and "fr-paris.example.org" not in search
    assert "没有找到。" in liaison.get(f"/admin/issues/2020-01/preview?q={someone}").text
    assert f'<option value="{paris}"' not in search
    assert editor.get(f"/admin/issues/2020-01/preview?q={someone}").text.count(someone) >= 1


@pytest.mark.parametrize("role", ["auditor", "list-manager"])
def test_readers_preview_but_are_offered_no_test_send(login: Login, lists: None, role: str) -> None:
    editor = login("editor")
    upload(editor, sample_issue_path())
    reader = login(role)
    page = reader.get(f"/admin/issues/2020-01/preview?subscriber={BERLIN_AI}")
    assert page.status_code == 200 and "<iframe" in page.text
    assert "/test-send" not in page.text


def test_preview_gets_change_nothing(login: Login, lists: None, engine: Engine) -> None:
    editor = login("editor")
    upload(editor, sample_issue_path())
    before = snapshot(engine)
    for path in (
        f"/admin/issues/2020-01/preview?subscriber={BERLIN_AI}",
        f"/admin/issues/2020-01/preview.eml?subscriber={BERLIN_AI}",
        "/admin/issues/2020-01/preview?mission=de-berlin&sectors=ai",
        "/admin/issues/2020-01/test-send",
    ):
        assert editor.get(path).status_code in {200, 405}
    assert snapshot(engine) == before


# --- 4. the test send -------------------------------------------------------------------------


def through(smtp: LoopbackController, settings: Settings) -> Settings:
    changes: dict[str, object] = {
        "transport": "smtp",
        "smtp.host": "127.0.0.1",
        "smtp.port": smtp.port,
    }
    return settings.overridden(changes)


def deliveries(engine: Engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(Delivery)).all())


def send_form(client: TestClient, query: str) -> tuple[str, list[tuple[str, str]]]:
    page = client.get(f"/admin/issues/2020-01/preview?{query}")
    assert page.status_code == 200, page.text
    form = page.text.split('action="/admin/issues/2020-01/test-send"', 1)[1].split("</form>")[0]
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form)
    return csrf(form), [(n, html.unescape(v)) for n, v in fields if n != "csrf"]


def test_a_test_send_goes_to_the_staff_address_only(
    login: Login, lists: None, engine: Engine, instance: Instance, smtp_server: LoopbackController
) -> None:
    settings = through(smtp_server, instance.settings)
    editor = login("editor", settings)
    upload(editor, sample_issue_path())
    token, fields = send_form(editor, f"subscriber={BERLIN_AI}")
    assert fields == [("subscriber", BERLIN_AI)]
    done = editor.post("/admin/issues/2020-01/test-send", data={"csrf": token, **dict(fields)})
    assert done.status_code == 303
    assert done.headers["location"] == (
        f"/admin/issues/2020-01/preview?subscriber={BERLIN_AI.replace('@', '%40')}&sent=1"
    )
    assert "测试邮件已发送至 li.wei@example.org" in editor.get(done.headers["location"]).text
    (mail,) = smtp_server.handler.received
    assert mail.rcpt == "li.wei@example.org"
    message = mail.parsed()
    assert str(message["Subject"]).startswith("[测试 TEST]")
    assert "li.wei@example.org" in str(message["To"]) and BERLIN_AI not in str(message["To"])
    assert deliveries(engine) == 0  # no ledger row: the test send burns nothing
    history = subscribers.show_subscriber(settings, BERLIN_AI, scope=Scope.all(), db=engine)
    assert [e.action for e in history.history].count("test_send") == 1


def test_a_liaison_test_sends_a_berlin_reading_to_themselves_only(
    login: Login, lists: None, engine: Engine, instance: Instance, smtp_server: LoopbackController
) -> None:
    settings = through(smtp_server, instance.settings)
    upload(login("editor", settings), sample_issue_path())
    liaison = login("liaison", settings)
    token, fields = send_form(liaison, "mission=de-berlin&sectors=ai&language=zh")
    assert fields == [("mission", "de-berlin"), ("sectors", "ai"), ("language", "zh")]
    form: dict[str, list[str]] = {"csrf": [token]}
    for name, value in fields:
        form.setdefault(name, []).append(value)
    sent = liaison.post("/admin/issues/2020-01/test-send", data=form)
    assert sent.status_code == 303 and sent.headers["location"].endswith("&sent=1")
    paris = liaison.post(
        "/admin/issues/2020-01/test-send", data={"csrf": token, "mission": "fr-paris"}
    )
    assert paris.status_code == 404
    (mail,) = smtp_server.handler.received
    assert mail.rcpt == "berlin@example.org"
    assert deliveries(engine) == 0


@pytest.mark.parametrize("role", ["auditor", "list-manager"])
def test_roles_without_test_send_send_nothing(
    login: Login, lists: None, engine: Engine, instance: Instance,
    smtp_server: LoopbackController, role: str,
) -> None:  # fmt: skip
    settings = through(smtp_server, instance.settings)
    upload(login("editor", settings), sample_issue_path())
    reader = login(role, settings)
    before = snapshot(engine)
    refused = reader.post(
        "/admin/issues/2020-01/test-send",
        data={"csrf": genuine_token(reader, "test-send"), "subscriber": BERLIN_AI},
    )
    assert refused.status_code == 403
    assert smtp_server.handler.received == [] and snapshot(engine) == before


def test_a_forged_token_sends_nothing(
    login: Login, lists: None, engine: Engine, instance: Instance, smtp_server: LoopbackController
) -> None:
    editor = login("editor", through(smtp_server, instance.settings))
    upload(editor, sample_issue_path())
    token, _ = send_form(editor, f"subscriber={BERLIN_AI}")
    before = snapshot(engine)
    for forged in ("", "forged" * 5, genuine_token(editor, "issue-yaml")):
        answer = editor.post(
            "/admin/issues/2020-01/test-send", data={"csrf": forged, "subscriber": BERLIN_AI}
        )
        assert answer.status_code == 403
    assert smtp_server.handler.received == [] and snapshot(engine) == before


# --- a person in chromium, at 360 px --------------------------------------------------------


@pytest.fixture
def served(instance: Instance) -> Iterator[str]:
    """The console on a loopback port of its own, in this process (uvicorn in a thread)."""
    import socket
    import threading
    import time

    import uvicorn

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


@pytest.mark.browser
# The pages are the same on PostgreSQL, which the TestClient tests above cover.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_an_editor_imports_the_seed_and_previews_it_as_a_berlin_reader_at_360_px(
    served: str, instance: Instance, engine: Engine, lists: None, javascript: bool,
    tmp_path: Path,
) -> None:  # fmt: skip
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail(f"CI=true but {CHROMIUM} is missing; .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    email_, _ = STAFF["editor"]
    enrolled = staff.add_staff(
        instance.settings, email_, role="editor", password=PASSWORD, actor=Actor.cli(), db=engine
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 360, "height": 720}, java_script_enabled=javascript
            )
            page = context.new_page()
            page.goto(f"{served}/admin")
            page.get_by_label("邮箱").fill(email_)
            page.get_by_label("密码").fill(PASSWORD)
            page.get_by_role("button", name="登录").click()
            page.wait_for_selector("h1:has-text('两步验证')")
            page.get_by_label("验证码").fill(pyotp.TOTP(enrolled.enrolment.totp_secret).now())
            page.get_by_role("button", name="验证").click()
            page.wait_for_selector("h1:has-text('首页')")

            page.get_by_role("link", name="期刊").click()
            page.get_by_role("link", name="导入一期").click()
            page.get_by_label("期刊文件").set_input_files(str(SEED))
            page.get_by_role("button", name="导入").click()
            page.wait_for_selector("h2:has-text('请核对转换提示')")
            assert page.locator("ol.warnings li").count() >= 1
            assert page.locator("ol.warnings pre.source").first.is_visible()
            page.get_by_role("button", name="确认导入").click()
            page.wait_for_selector("text=已导入")
            assert page.locator(".chip .why").first.is_visible()  # the keyword behind a chip
            _fits(page, "the issue page")

            page.get_by_role("link", name="预览").first.click()
            page.get_by_label("查找订阅者").fill("chen.hao")
            page.get_by_role("button", name="查找").click()
            page.get_by_role("link", name=re.compile(BERLIN_AI)).click()
            page.wait_for_selector("iframe.digest")
            page.get_by_role("link", name="360 px").click()
            page.wait_for_selector("iframe.digest.w360")
            frame = page.locator("iframe.digest")
            assert frame.get_attribute("sandbox") == ""
            box = frame.bounding_box()
            assert box is not None and box["width"] <= 362
            digest = page.frame_locator("iframe.digest")
            assert digest.locator("body").inner_text().strip()  # the digest is there to read
            assert page.locator("text=included: matches sectors").first.is_visible()
            _fits(page, "the preview")
            page.screenshot(path=str(tmp_path / "preview-360.png"), full_page=True)
            frame.screenshot(path=str(tmp_path / "digest-360.png"))
            context.close()
        finally:
            browser.close()
    assert slugs(engine) == ["2020-01"]


def _fits(page: Any, what: str) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 360, f"{what} is {width}px wide at 360px"


def test_the_size_warns_near_gmails_clip_and_names_the_bodies_cut_to_stay_under(
    login: Login, tmp_path: Path
) -> None:
    editor = login("editor")
    text = sample_issue_path().read_text(encoding="utf-8")
    sizes: dict[str, str] = {}
    for number, paragraphs in ((1, 0), (2, 100), (3, 400)):
        # Each paragraph some 570 bytes of HTML: 100 take the digest near the clip, 400 past it.
        body = "\\n\\n".join(["科技创新合作持续推进，" * 17] * paragraphs)
        issue = text.replace("number: 1\n", f"number: {number}\n", 1)
        if paragraphs:
            long = f'  - id: long\n    section: focus\n    title: 长文\n    body: "{body}"\n'
            issue = issue.replace("items:\n", f"items:\n{long}    always: true\n", 1)
        path = tmp_path / f"{number}.yaml"
        path.write_text(issue, encoding="utf-8")
        assert upload(editor, path).status_code == 303
        page = editor.get(f"/admin/issues/2020-{number:02d}/preview").text
        found = re.search(
            r'<p class="size[^"]*">.*?</p>(\s*<p class="size warn">.*?</p>)?', page, re.S
        )
        assert found, page
        sizes[f"2020-{number:02d}"] = found.group(0)
    assert "warn" not in sizes["2020-01"] and "/ 102 KB（Gmail" in sizes["2020-01"]
    assert 'class="size warn"' in sizes["2020-02"] and "接近 Gmail 截断上限。" in sizes["2020-02"]
    assert "为免被截断" not in sizes["2020-02"]
    cut = sizes["2020-03"]
    assert "接近 Gmail 截断上限。" in cut and "超过 Gmail 截断上限" not in cut, sizes
    assert "为免被截断，以下条目正文已缩短：<code>long</code>" in cut


def test_the_pages_need_nothing_inline_and_say_their_language(login: Login, lists: None) -> None:
    editor = login("editor")
    assert import_seed(editor).status_code == 303
    for path in (
        "/admin/issues", "/admin/issues/import", "/admin/issues/2020-01",
        f"/admin/issues/2020-01/preview?subscriber={BERLIN_AI}",
        f"/admin/issues/2020-01/preview?subscriber={BERLIN_AI}&tab=text",
        f"/admin/issues/2020-01/preview?subscriber={BERLIN_AI}&tab=headers",
    ):  # fmt: skip
        page = editor.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-security-policy"] == CSP
        assert '<html lang="zh-CN">' in page.text
        # Nothing inline in the console's own pages (the digest is a framed document of its own).
        for inline in ("<script", "<style", ' style="', " onclick="):
            assert inline not in page.text, (path, inline)
        for label in re.findall(r'<label for="([^"]+)"', page.text):
            assert f'id="{label}"' in page.text, (path, label)
