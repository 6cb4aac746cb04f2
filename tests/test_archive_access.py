"""Who may read the archive (`[archive] visibility`): the real web app, digests from a real SMTP
server, and one diplomat's path in Debian's chromium at 320 px."""

from __future__ import annotations

import datetime as dt
import json
import re
import warnings
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.content.issue_intake import sample_issue_path
from newsletter.mail.links import read_token, recipient_links
from newsletter.models import AuditEvent, Subscriber
from newsletter.testing.sink import LoopbackController
from newsletter.tokens import Purpose, make_token
from newsletter.web import create_app
from tests.chromium import CHROMIUM, CHROMIUM_ARGS, WIDTH
from tests.chromium import fits as _fits
from tests.chromium import need_chromium as _need_chromium
from tests.conftest import Instance, cli, database, make_instance
from tests.processes import local_base_url, serving

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

ZH, EN = "li.hua@de-berlin.example.org", "anna.schmidt@de-berlin.example.org"
ATOM = "{http://www.w3.org/2005/Atom}"
WEB_LINK = re.compile(r"https?://[^\s\"<>]*/archive/[^\s\"<>]*")


def _send(runner: CliRunner, instance: Instance, server: LoopbackController) -> None:
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    cli(runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-host", "127.0.0.1",
        "--smtp-port", str(server.port), "--json")  # fmt: skip


def _readers(runner: CliRunner, instance: Instance) -> None:
    cli(runner, instance, "subscribers", "add", ZH, "--embassy", "de-berlin", "--sectors", "ai")
    cli(runner, instance, "subscribers", "add", EN, "--embassy", "de-berlin", "--language", "en",
        "--sectors", "biomedicine")  # fmt: skip


def _parts(message: EmailMessage) -> str:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    return str(text.get_content()) + str(html.get_content())


def _web_links(server: LoopbackController, address: str) -> list[str]:
    """Every web-version link of the digest `address` received (HTML entities undone)."""
    [received] = [r for r in server.handler.received if r.rcpt == address]
    found = {url.replace("&amp;", "&") for url in WEB_LINK.findall(_parts(received.parsed()))}
    assert found, "the digest links to no web version"
    return sorted(found)


def _local(url: str) -> str:
    return "/" + url.split("/", 3)[3].split("#")[0]


def _token(url: str) -> str:
    found = re.search(r"[?&]r=([\w.-]+)", url)
    assert found, url
    return found.group(1)


def _restricted(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["cache-control"] == "private, no-store"
    assert headers["x-robots-tag"] == "noindex"


def _audit_count(instance: Instance) -> int:
    with database(instance) as engine, Session(engine) as session:
        return len(session.exec(select(AuditEvent)).all())


def _subscriber(instance: Instance, address: str) -> Subscriber:
    with database(instance) as engine, Session(engine) as session:
        return session.exec(select(Subscriber).where(Subscriber.email == address)).one()


def test_a_subscribers_archive_serves_every_digest_link_and_refuses_everyone_else(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    settings = instance.settings
    assert settings.archive.visibility == "subscribers"  # the default
    _readers(runner, instance)
    _send(runner, instance, smtp_server)
    zh_links, en_links = _web_links(smtp_server, ZH), _web_links(smtp_server, EN)
    # Each reader's links carry their own token, which opens the web version for them alone.
    assert {_token(u) for u in zh_links} == {
        read_token(settings, _subscriber(instance, ZH).token_key)
    }
    assert {_token(u) for u in en_links} == {
        read_token(settings, _subscriber(instance, EN).token_key)
    }
    before = _audit_count(instance)
    with TestClient(create_app(settings)) as client:
        for url in zh_links + en_links:
            shown = client.get(_local(url))
            assert shown.status_code == 200, url
            assert "中国科技创新速递" in shown.text and 'id="' in shown.text
            _restricted(shown)
        listing = client.get(f"/archive?r={_token(zh_links[0])}")
        assert (
            listing.status_code == 200
            and f"/archive/2020-01?r={_token(zh_links[0])}" in listing.text
        )
        _restricted(listing)
        # The listing's own links back to it keep the token, so a reader never meets a refusal.
        assert f'href="http://127.0.0.1:8000/archive?r={_token(zh_links[0])}"' in listing.text

        stranger = client.get("/archive/2020-01")
        assert stranger.status_code == 403 and "往期仅供订阅者阅读" in stranger.text
        assert (
            'href="http://127.0.0.1:8000/subscribe"' in stranger.text
            and "2020" not in stranger.text
        )
        _restricted(stranger)
        assert client.get("/archive").text == stranger.text
        # A missing issue answers as an existing one does: a stranger learns no slugs.
        assert client.get("/archive/1999-01").text == stranger.text
        # Forged, altered, another purpose's or another key's token: the same one refusal.
        token = _token(zh_links[0])
        payload, mac = token.split(".")
        key = _subscriber(instance, ZH).token_key
        unsubscribe = recipient_links(settings, key)[0].rsplit("/", 1)[1]
        for forged in (f"{payload}.{mac[::-1]}", f"{payload[:-2]}AA.{mac}", unsubscribe,
                       make_token(b"another instance's secret", Purpose.READ, key),
                       make_token(settings.secret, Purpose.READ, "no-such-key"), "r"):  # fmt: skip
            refused = client.get(f"/archive/2020-01?r={forged}")
            assert (refused.status_code, refused.text) == (403, stranger.text), forged
        assert client.get("/archive/feed.atom").status_code == 404  # no feed of a closed archive
    assert _audit_count(instance) == before  # reading changes nothing

    # A reader who leaves loses the archive with the digests.
    cli(runner, instance, "subscribers", "remove", ZH, "--yes")
    with TestClient(create_app(instance.settings)) as client:
        assert client.get(_local(zh_links[0])).status_code == 403
        assert client.get(_local(en_links[0])).status_code == 200


def test_a_public_archive_is_cached_has_an_atom_feed_and_its_digests_carry_no_token(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    config = instance.config.read_text(encoding="utf-8")
    instance.config.write_text(
        config.replace('visibility = "subscribers"', 'visibility = "public"'), encoding="utf-8"
    )
    settings = instance.settings
    _readers(runner, instance)
    with TestClient(create_app(settings)) as client:
        empty = ET.fromstring(client.get("/archive/feed.atom").content)
        assert empty.tag == f"{ATOM}feed" and empty.findall(f"{ATOM}entry") == []
    _send(runner, instance, smtp_server)
    links = _web_links(smtp_server, ZH)
    assert not any("r=" in u for u in links)
    with TestClient(create_app(settings)) as client:
        for url in links:
            shown = client.get(_local(url))
            assert shown.status_code == 200
            assert shown.headers["cache-control"] == "public, max-age=300"
            assert "x-robots-tag" not in shown.headers
        assert 'href="http://127.0.0.1:8000/archive/feed.atom"' in client.get("/archive").text
        answer = client.get("/archive/feed.atom")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert answer.content.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    feed = ET.fromstring(answer.content)
    # RFC 4287: a feed has exactly one id, title and updated, an author, and a self link;
    # so has each entry (its author is the feed's), with an alternate link.
    assert feed.tag == f"{ATOM}feed"
    for element in (feed, *feed.findall(f"{ATOM}entry")):
        for tag in ("id", "title", "updated"):
            assert len(element.findall(f"{ATOM}{tag}")) == 1, (element.tag, tag)
        assert dt.datetime.fromisoformat(element.findtext(f"{ATOM}updated") or "").tzinfo
    assert feed.findtext(f"{ATOM}author/{ATOM}name") == "中国科技创新速递"
    rels = {link.get("rel"): link.get("href") for link in feed.findall(f"{ATOM}link")}
    assert rels["self"] == "http://127.0.0.1:8000/archive/feed.atom"
    [entry] = feed.findall(f"{ATOM}entry")
    assert entry.findtext(f"{ATOM}id") == "http://127.0.0.1:8000/archive/2020-01"
    assert entry.findtext(f"{ATOM}title") == "中国科技创新速递 2020年第1期"
    assert entry.findtext(f"{ATOM}updated") == "2020-08-01T00:00:00+00:00"
    assert entry.find(f"{ATOM}link").get("href") == "http://127.0.0.1:8000/archive/2020-01"  # type: ignore[union-attr]


def test_a_staff_archive_refuses_even_a_readers_token(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    _readers(runner, instance)
    _send(runner, instance, smtp_server)
    [link, *_] = _web_links(smtp_server, ZH)
    settings = instance.settings.overridden({"archive.visibility": "staff"})
    with TestClient(create_app(settings)) as client:
        for path in (_local(link), "/archive/2020-01", "/archive"):
            refused = client.get(path)
            assert refused.status_code == 403 and "往期仅供内部查阅" in refused.text
            _restricted(refused)
        assert client.get("/archive/feed.atom").status_code == 404


@pytest.mark.browser
def test_the_digest_link_opens_the_issue_on_a_phone_and_a_stranger_is_sent_to_subscribe(
    tmp_path: Path, runner: CliRunner, smtp_server: LoopbackController
) -> None:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    instance = make_instance(tmp_path, f"sqlite:///{tmp_path / 'newsletter.db'}")
    base_url = local_base_url(instance)
    cli(runner, instance, "init")
    _readers(runner, instance)
    _send(runner, instance, smtp_server)
    [link, *_] = _web_links(smtp_server, ZH)
    assert link.startswith(f"{base_url}/archive/2020-01?r=")
    with serving(instance, base_url, tmp_path / "serve.log"):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": WIDTH, "height": 640})
                answer = page.goto(link)
                assert answer is not None and answer.status == 200
                assert answer.headers["cache-control"] == "private, no-store"
                page.wait_for_selector("h1")
                assert "中国科技创新速递" in page.title() + page.inner_text("body")
                _fits(page)
                # The same address without the token: told how to subscribe, in one tap.
                refused = page.goto(f"{base_url}/archive/2020-01")
                assert refused is not None and refused.status == 403
                page.wait_for_selector("text=往期仅供订阅者阅读")
                _fits(page)
                page.click("p >> text=订阅 Subscribe")
                page.wait_for_selector("#email")
                assert page.url == f"{base_url}/subscribe"
            finally:
                browser.close()


def test_the_demo_serves_a_subscribers_archive_that_opens_from_its_digests(
    tmp_path: Path, runner: CliRunner
) -> None:
    demo = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--dir", str(demo), "--json"])
    assert result.exit_code == 0, result.output
    outbox = Path(json.loads(result.stdout)["outbox"])
    instance = Instance(demo, demo / "newsletter.toml")
    settings = instance.settings
    assert settings.archive.visibility == "subscribers"
    assert settings.web.allowed_domains == ("example.org", "example.com")
    with TestClient(create_app(settings)) as client:
        assert client.get("/archive/2020-01").status_code == 403
        checked = 0
        for file in sorted(outbox.glob("*.eml"))[:12]:
            message = message_from_bytes(file.read_bytes(), policy=policy.default)
            assert isinstance(message, EmailMessage)
            for url in {u.replace("&amp;", "&") for u in WEB_LINK.findall(_parts(message))}:
                assert client.get(_local(url)).status_code == 200, (file.name, url)
                checked += 1
        assert checked >= 12
