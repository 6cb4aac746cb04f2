""" "Connect me" (对接) on cooperation demands: the link from a real digest (received by a real
SMTP server), the form and its one request, the contact's mail, staff's CLI and erasure."""

from __future__ import annotations

import json
import re
import warnings
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter.config import Settings
from newsletter.content.issue_intake import sample_issue_path
from newsletter.mail.links import connect_token, read_token
from newsletter.models import AdminEvent, CooperationRequest, Subscriber
from newsletter.testing.sink import LoopbackController
from newsletter.tokens import Purpose, make_token
from newsletter.web import create_app
from tests.chromium import CHROMIUM, CHROMIUM_ARGS, WIDTH
from tests.chromium import fits as _fits
from tests.chromium import need_chromium as _need_chromium
from tests.conftest import Instance, cli, database, fails, make_instance
from tests.processes import local_base_url, serving

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

ZH, EN = "li.hua@de-berlin.example.org", "anna.schmidt@de-berlin.example.org"
CONTACT = "irs@cstec.org.cn"  # the sample issue's contact.email
DEMAND = "beijing-application-scenarios"  # a 需求 item the AI reader's digest holds
CONNECT = re.compile(r"https?://[^\s\"<>]*/connect/[^\s\"<>]*")


def _send(runner: CliRunner, instance: Instance, server: LoopbackController) -> Settings:
    cli(runner, instance, "subscribers", "add", ZH, "--embassy", "de-berlin", "--sectors", "ai",
        "--name", "李华")  # fmt: skip
    cli(runner, instance, "subscribers", "add", EN, "--embassy", "de-berlin", "--language", "en",
        "--sectors", "biomedicine")  # fmt: skip
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    cli(runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-host", "127.0.0.1",
        "--smtp-port", str(server.port), "--json")  # fmt: skip
    changes: dict[str, object] = {"transport": "smtp", "smtp.host": "127.0.0.1",
                                  "smtp.port": server.port}  # fmt: skip
    return instance.settings.overridden(changes)


def _received(server: LoopbackController, address: str) -> list[EmailMessage]:
    return [r.parsed() for r in server.handler.received if r.rcpt == address]


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content())


def _html(message: EmailMessage) -> str:
    body = message.get_body(("html",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content())


def _local(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def _subscriber(instance: Instance, address: str) -> Subscriber:
    with database(instance) as engine, Session(engine) as session:
        return session.exec(select(Subscriber).where(Subscriber.email == address)).one()


def _requests(instance: Instance) -> list[CooperationRequest]:
    with database(instance) as engine, Session(engine) as session:
        return list(session.exec(select(CooperationRequest)).all())


def _events(instance: Instance, action: str) -> list[AdminEvent]:
    with database(instance) as engine, Session(engine) as session:
        return list(session.exec(select(AdminEvent).where(AdminEvent.action == action)).all())


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def _connect_links(server: LoopbackController, address: str) -> set[str]:
    [digest] = _received(server, address)
    html = {u.replace("&amp;", "&") for u in CONNECT.findall(_html(digest))}
    text = set(CONNECT.findall(_text(digest)))
    assert html == text, "the text and HTML parts link to the same forms"
    return text


def _json(runner: CliRunner, instance: Instance, *args: str) -> Any:
    return json.loads(cli(runner, instance, *args, "--json"))


def test_connect_me_from_a_real_digest_makes_one_request_and_tells_the_contact_once(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    settings = _send(runner, instance, smtp_server)
    reader = _subscriber(instance, ZH)
    links = _connect_links(smtp_server, ZH)
    # Each demand item of the reader's digest, with the reader's own token spliced in.
    token = connect_token(settings, reader.token_key)
    assert links and all(link.endswith(f"/{token}") for link in links)
    [link] = [u for u in links if f"/connect/2020-01/{DEMAND}/" in u]
    [digest] = _received(smtp_server, ZH)
    assert "我有合作意向" in _text(digest) and "我有合作意向" in _html(digest)
    assert "%%" not in _text(digest) + _html(digest)
    assert not _connect_links(smtp_server, EN)  # no demand item in the biomedicine digest

    with TestClient(create_app(settings)) as client:
        form = client.get(_local(link))
        assert form.status_code == 200
        assert "合作机构" in form.text and "北京" in form.text  # labelled, the item named
        assert 'readonly value="中华人民共和国驻德意志联邦共和国大使馆"' in form.text  # prefilled
        assert form.headers["cache-control"] == "no-store"
        assert form.headers["x-robots-tag"] == "noindex"
        # Opening the form, twice, changes nothing and tracks nobody.
        client.get(_local(link))
        assert _requests(instance) == [] and _events(instance, "cooperation.request") == []
        assert [r.rcpt for r in smtp_server.handler.received].count(CONTACT) == 0

        answer = {"note": "慕尼黑一家自动驾驶企业有意参与", "organisation": "Muster GmbH",
                  "country": "德国", "csrf": _csrf(form.text)}  # fmt: skip
        done = client.post(_local(link), data=answer)
        assert done.status_code == 200 and "已收到您的对接意向" in done.text
        [made] = _requests(instance)
        assert (made.item_id, made.mission, made.state) == (DEMAND, "de-berlin", "new")
        assert made.subscriber_id == reader.id and made.organisation == "Muster GmbH"
        [notice] = _received(smtp_server, CONTACT)
        assert "慕尼黑一家自动驾驶企业有意参与" in _text(notice) and ZH in _text(notice)
        assert "de-berlin" in _text(notice) and str(notice["Reply-To"]) == ZH

        again = client.post(_local(link), data={**answer, "note": "已联系对方，可安排会谈"})
        assert again.status_code == 200 and "留言已更新" in again.text
        [same] = _requests(instance)
        assert same.id == made.id and same.note == "已联系对方，可安排会谈"
        assert len(_received(smtp_server, CONTACT)) == 2  # told of the change, no second request
        assert "对接意向已更新" in str(_received(smtp_server, CONTACT)[1]["Subject"])
        assert len(_events(instance, "cooperation.request")) == 1
        assert len(_events(instance, "cooperation.update")) == 1
        # The form opened again shows the reader what they sent, and says it was recorded.
        assert "已联系对方" in client.get(_local(link)).text


def test_forged_altered_and_misused_tokens_get_the_one_refusal(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    settings = _send(runner, instance, smtp_server)
    reader = _subscriber(instance, ZH)
    token = connect_token(settings, reader.token_key)
    base = "/connect/2020-01"
    with TestClient(create_app(settings)) as client:
        refusal = client.get("/confirm/nonsense").text
        forged = make_token(b"x" * 32, Purpose.CONNECT, reader.token_key)
        other_kind = read_token(settings, reader.token_key)  # a valid token for something else
        altered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        for path in (
            f"{base}/{DEMAND}/{forged}", f"{base}/{DEMAND}/{other_kind}",
            f"{base}/{DEMAND}/{altered}", f"{base}/hightech-zones-opinions/{token}",  # a policy
            f"{base}/no-such-item/{token}", f"/connect/1999-01/{DEMAND}/{token}",
        ):  # fmt: skip
            shown = client.get(path)
            assert shown.status_code == 400 and shown.text == refusal, path
        form = client.get(f"{base}/{DEMAND}/{token}")
        posted = client.post(
            f"{base}/{DEMAND}/{forged}", data={"note": "x", "csrf": _csrf(form.text)}
        )
        assert posted.status_code == 400 and posted.text == refusal
        # Without the form's CSRF value nothing is recorded either.
        assert client.post(f"{base}/{DEMAND}/{token}", data={"note": "x"}).status_code == 403
        # A control character in a field: the form again, the field named, nothing stored.
        bad = client.post(
            f"{base}/{DEMAND}/{token}", data={"organisation": "A\x1bB", "csrf": _csrf(form.text)}
        )
        assert bad.status_code == 400 and 'id="organisation-error"' in bad.text
    assert _requests(instance) == []
    assert CONTACT not in [r.rcpt for r in smtp_server.handler.received]


def test_staff_list_show_and_update_requests_and_erasure_anonymises_them(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    settings = _send(runner, instance, smtp_server)
    reader = _subscriber(instance, ZH)
    path = f"/connect/2020-01/{DEMAND}/{connect_token(settings, reader.token_key)}"
    with TestClient(create_app(settings)) as client:
        form = client.get(path)
        client.post(path, data={"note": "有伙伴", "organisation": "Muster GmbH",
                                "country": "德国", "csrf": _csrf(form.text)})  # fmt: skip
    [listed] = _json(runner, instance, "requests", "list")
    assert (listed["issue"], listed["item"], listed["mission"], listed["state"]) == (
        "2020-01",
        DEMAND,
        "de-berlin",
        "new",
    )
    assert listed["email"] == ZH
    assert _json(runner, instance, "requests", "list", "--embassy", "fr-paris") == []
    assert _json(runner, instance, "requests", "list", "--issue", "2020-01", "--state", "new")
    table = cli(runner, instance, "requests", "list")
    assert DEMAND in table and ZH in table
    shown = cli(runner, instance, "requests", "show", str(listed["id"]))
    assert "note: 有伙伴" in shown and "organisation: Muster GmbH" in shown

    updated = _json(runner, instance, "requests", "update", str(listed["id"]),
                    "--state", "in-contact", "--note", "已转园区")  # fmt: skip
    assert updated["state"] == "in-contact" and updated["staff_note"] == "已转园区"
    [event] = _events(instance, "cooperation.state")
    assert event.actor_kind == "cli" and event.target == f"cooperation_request:{listed['id']}"
    assert '"in-contact"' in event.detail and event.mission == "de-berlin"
    assert "unknown state 'done'" in fails(
        runner, instance, "requests", "update", str(listed["id"]), "--state", "done"
    )
    assert "not found" in fails(runner, instance, "requests", "show", "999")
    assert _json(runner, instance, "requests", "show", str(listed["id"]))["state"] == "in-contact"
    assert cli(runner, instance, "audit", "verify") is not None

    cli(runner, instance, "subscribers", "remove", ZH, "--yes")
    [kept] = _json(runner, instance, "requests", "list")
    assert (kept["item"], kept["mission"], kept["state"], kept["created_at"]) == (
        DEMAND,
        "de-berlin",
        "in-contact",
        listed["created_at"],
    )
    assert kept["email"] == "" and kept["note"] == kept["organisation"] == kept["country"] == ""
    [row] = _requests(instance)
    assert row.subscriber_id is None
    # The erased reader's old link is refused like any other bad link.
    with TestClient(create_app(settings)) as client:
        assert client.get(path).status_code == 400


def test_a_diplomat_answers_a_demand_from_a_phone_in_two_taps(
    tmp_path: Path, runner: CliRunner, smtp_server: LoopbackController
) -> None:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    instance = make_instance(tmp_path, f"sqlite:///{tmp_path / 'newsletter.db'}")
    base_url = local_base_url(instance)
    cli(runner, instance, "init")
    _send(runner, instance, smtp_server)
    [link] = [u for u in _connect_links(smtp_server, ZH) if f"/{DEMAND}/" in u]
    assert link.startswith(f"{base_url}/connect/2020-01/")
    with serving(instance, base_url, tmp_path / "serve.log"):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": WIDTH, "height": 640})
                answer = page.goto(link)  # tap one: the link in the digest
                assert answer is not None and answer.status == 200
                page.wait_for_selector("label[for=organisation]")
                assert page.input_value("#mission").startswith("中华人民共和国驻德")
                _fits(page)
                page.click("button[type=submit]")  # tap two: nothing to fill in
                page.wait_for_selector("text=已收到您的对接意向")
                _fits(page)
            finally:
                browser.close()
    [made] = _json(runner, instance, "requests", "list")
    assert (made["item"], made["email"], made["note"]) == (DEMAND, ZH, "")


def test_actionable_marks_any_item_for_connect_me_and_survives_a_round_trip() -> None:
    from newsletter.content.issue_yaml import IssueFileError, dump_issue, load_issue

    text = sample_issue_path().read_text(encoding="utf-8")
    marked = text.replace(
        "  - id: siat-soft-robot-morphology\n",
        "  - id: siat-soft-robot-morphology\n    actionable: true\n",
    )
    assert marked != text
    issue = load_issue(marked, source="issue.yaml")
    by_id = {item.id: item for item in issue.items}
    assert by_id["siat-soft-robot-morphology"].connectable  # a research item, marked
    assert by_id[DEMAND].connectable and not by_id[DEMAND].actionable  # every demand item
    assert not by_id["hightech-zones-opinions"].connectable
    assert load_issue(dump_issue(issue), source="again") == issue
    with pytest.raises(IssueFileError, match=r"actionable.*must be true or false"):
        load_issue(marked.replace("actionable: true", "actionable: maybe"), source="issue.yaml")
