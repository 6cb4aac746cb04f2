"""The subscriber pages through FastAPI's test client: flows, refusals, limits, escaping."""

from __future__ import annotations

import datetime as dt
import email
import re
import warnings
from collections.abc import Iterator, Mapping
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter.config import Settings, WebSettings, load_settings
from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import make_engine
from newsletter.errors import ConfigError
from newsletter.mail.links import recipient_links
from newsletter.models import AuditEvent, Subscriber, utcnow
from newsletter.web import WebLimits, create_app
from tests.conftest import Instance, cli

with warnings.catch_warnings():
    # Starlette's test client prefers the `httpx2` package and warns when it falls back to
    # `httpx`; either drives the app the same way.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from httpx2 import Response

FORM = {"email": "new@example.org", "name": "王芳", "embassy": "de-berlin",
        "sectors": ["ai", "biomedicine"], "language": "zh"}  # fmt: skip


@pytest.fixture
def settings(instance: Instance) -> Settings:
    return instance.settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def public_client(settings: Settings) -> Iterator[TestClient]:
    """The same instance with a public archive (`[archive] visibility`, subscribers by default)."""
    with TestClient(
        create_app(settings.overridden({"archive.visibility": "public"}))
    ) as test_client:
        yield test_client


def _csrf(client: TestClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def _post(client: TestClient, path: str, data: Mapping[str, object]) -> Response:
    return client.post(path, data={**data, "csrf": _csrf(client, path)}, follow_redirects=False)


def _subscriber(settings: Settings, address: str) -> Subscriber:
    engine = make_engine(settings.resolved_database_url)
    with Session(engine, expire_on_commit=False) as session:
        found = session.exec(select(Subscriber).where(Subscriber.email == address)).one()
    engine.dispose()
    return found


def _events(settings: Settings, subscriber_id: int | None) -> list[tuple[str, str, str, str]]:
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        query = select(AuditEvent).where(AuditEvent.subscriber_id == subscriber_id)
        events = [(e.action, e.new_status, e.actor, e.via) for e in session.exec(query)]
    engine.dispose()
    return events


def _mails(settings: Settings) -> list[EmailMessage]:
    out = []
    files = settings.path(settings.outbox).glob("*.eml")
    for file in sorted(files, key=lambda p: p.stat().st_mtime_ns):
        message = email.message_from_bytes(file.read_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        out.append(message)
    return out


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content())


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def _confirm_path(message: EmailMessage) -> str:
    found = re.search(r"https?://\S+(/confirm/\S+)", _text(message))
    assert found, _text(message)
    return found.group(1)


def test_subscribe_confirm_change_preferences_unsubscribe(
    client: TestClient, settings: Settings
) -> None:
    form = client.get("/subscribe")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in form.text
    assert "电子邮箱" in form.text and "Email" in form.text
    answer = _post(client, "/subscribe", FORM)
    assert answer.status_code == 200 and "请查收邮件" in answer.text
    me = _subscriber(settings, "new@example.org")
    assert me.status == "pending" and me.name == "王芳"

    [mail] = _mails(settings)
    assert mail["To"].addresses[0].addr_spec == "new@example.org"
    assert "王芳" not in _text(mail)  # nothing typed into the form reaches the mail
    confirm = _confirm_path(mail)
    assert "确认订阅" in client.get(confirm).text
    assert _subscriber(settings, "new@example.org").status == "pending"  # GET changes nothing
    done = _post(client, confirm, {})
    assert done.status_code == 200 and "订阅已确认" in done.text
    assert _subscriber(settings, "new@example.org").status == "active"

    unsubscribe, preferences, _ = recipient_links(settings, me.token_key)
    saved = _post(client, _path(preferences), {"sectors": ["new-materials"], "language": "en"})
    assert saved.status_code == 303
    page = client.get(_path(preferences) + "?saved=1")
    assert "已保存" in page.text and 'value="new-materials" checked' in page.text
    assert 'value="ai" checked' not in page.text and 'value="en" checked' in page.text

    assert "退订" in client.get(_path(unsubscribe)).text
    assert _subscriber(settings, "new@example.org").status == "active"
    gone = _post(client, _path(unsubscribe), {})
    assert gone.status_code == 200 and "已退订" in gone.text
    assert _events(settings, me.id) == [
        ("created", "pending", "subscriber", "web"),
        ("status", "active", "subscriber", "link"),
        ("preferences", "active", "subscriber", "link"),
        ("status", "unsubscribed", "subscriber", "link"),
    ]


def test_one_click_unsubscribe_needs_no_cookie_and_is_idempotent(
    settings: Settings, runner: CliRunner, instance: Instance
) -> None:
    cli(runner, instance, "subscribers", "add", "a@example.org", "--embassy", "de-berlin")
    me = _subscriber(settings, "a@example.org")
    unsubscribe, _, _ = recipient_links(settings, me.token_key)
    with TestClient(create_app(settings)) as mail_provider:
        for _ in range(2):
            reply = mail_provider.post(
                _path(unsubscribe), content=b"List-Unsubscribe=One-Click", follow_redirects=False,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
            assert reply.status_code == 200 and "已退订" in reply.text
            assert "set-cookie" not in reply.headers
    assert _subscriber(settings, "a@example.org").status == "unsubscribed"
    assert _events(settings, me.id)[1:] == [("status", "unsubscribed", "subscriber", "one-click")]


def test_state_changing_posts_need_the_csrf_value(
    client: TestClient, settings: Settings, runner: CliRunner, instance: Instance
) -> None:
    assert client.post("/subscribe", data=FORM).status_code == 403
    value = _csrf(client, "/subscribe")
    altered = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    assert client.post("/subscribe", data={**FORM, "csrf": altered}).status_code == 403
    cli(runner, instance, "subscribers", "add", "a@example.org", "--embassy", "de-berlin")
    unsubscribe, _, _ = recipient_links(settings, _subscriber(settings, "a@example.org").token_key)
    other_form = _csrf(client, _path(unsubscribe))  # made for the unsubscribe form
    assert client.post("/subscribe", data={**FORM, "csrf": other_form}).status_code == 403
    evil = client.post(
        "/subscribe", data={**FORM, "csrf": value}, headers={"Origin": "https://evil.example"}
    )
    assert evil.status_code == 403 and "页面已过期" in evil.text
    with TestClient(create_app(settings)) as cookieless:
        assert cookieless.post("/subscribe", data={**FORM, "csrf": value}).status_code == 403
    assert _mails(settings) == []
    ok = client.post("/subscribe", data={**FORM, "csrf": value}, headers={"Origin": "null"})
    assert ok.status_code == 200 and len(_mails(settings)) == 1


def test_the_answer_is_the_same_whatever_the_address_state(
    client: TestClient, settings: Settings, runner: CliRunner, instance: Instance
) -> None:
    cli(runner, instance, "subscribers", "add", "active@example.org", "--embassy", "fr-paris",
        "--name", "Kept")  # fmt: skip
    cli(runner, instance, "subscribers", "add", "left@example.org", "--embassy", "fr-paris")
    cli(runner, instance, "subscribers", "add", "erased@example.org", "--embassy", "fr-paris")
    cli(runner, instance, "subscribers", "remove", "erased@example.org")
    left = _subscriber(settings, "left@example.org")
    _, _, _ = recipient_links(settings, left.token_key)
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        row = session.get(Subscriber, left.id)
        assert row is not None
        row.status = "unsubscribed"  # type: ignore[assignment]
        row.status_changed_at = utcnow() - dt.timedelta(minutes=5)
        session.add(row)
        session.commit()
    engine.dispose()

    answers = {
        address: _post(client, "/subscribe", {**FORM, "email": address, "name": "Intruder"})
        for address in ("new@example.org", "active@example.org", "left@example.org",
                        "erased@example.org", "new@example.org")
    }  # fmt: skip
    assert {a.status_code for a in answers.values()} == {200}
    assert len({a.text for a in answers.values()}) == 1
    assert _subscriber(settings, "active@example.org").name == "Kept"  # never changed by the form
    sent = {m["To"].addresses[0].addr_spec: _text(m) for m in _mails(settings)}
    assert set(sent) == {"new@example.org", "active@example.org", "left@example.org"}
    reminder = sent["active@example.org"]
    assert "/preferences/" in reminder and "/confirm/" not in reminder

    # The one who left can come back, by confirming the fresh link.
    [again] = [m for m in _mails(settings) if m["To"].addresses[0].addr_spec == "left@example.org"]
    assert _post(client, _confirm_path(again), {}).status_code == 200
    assert _subscriber(settings, "left@example.org").status == "active"


def test_limits_apply_before_any_write_or_mail(settings: Settings) -> None:
    limits = _limits(subscribe_per_ip=3, subscribe_per_address=1)
    with TestClient(create_app(settings, limits=limits)) as client:
        first = _post(client, "/subscribe", FORM)
        second = _post(client, "/subscribe", FORM)
        assert first.text == second.text
        assert len(_mails(settings)) == 1  # the address limit holds back the second mail
        _post(client, "/subscribe", {**FORM, "email": "other@example.org"})
        busy = _post(client, "/subscribe", {**FORM, "email": "third@example.org"})
        assert busy.status_code == 429 and int(busy.headers["Retry-After"]) > 0
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        stored = {s.email for s in session.exec(select(Subscriber))}
    engine.dispose()
    assert stored == {"new@example.org", "other@example.org"}


def test_the_per_ip_limit_is_shared_by_every_web_process(settings: Settings) -> None:
    """Two apps on one database, as two `serve` processes: together they allow the limit once."""
    limits = _limits(subscribe_per_ip=3, subscribe_per_address=3)
    with (
        TestClient(create_app(settings, limits=limits)) as one,
        TestClient(create_app(settings, limits=limits)) as two,
    ):
        answers = [
            _post(client, "/subscribe", {**FORM, "email": f"p{n}@example.org"}).status_code
            for n, client in enumerate([one, two, one, two])
        ]
    assert answers == [200, 200, 200, 429]
    assert len(_mails(settings)) == 3


def test_the_limit_lets_a_client_in_again_once_its_hits_age_out(settings: Settings) -> None:
    now = [dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.UTC)]
    limits = _limits(subscribe_per_ip=2, subscribe_per_address=9, window_seconds=60)
    with TestClient(create_app(settings, limits=limits, clock=lambda: now[0])) as client:

        def post(n: int) -> Response:
            return _post(client, "/subscribe", {**FORM, "email": f"t{n}@example.org"})

        assert [post(0).status_code, post(1).status_code] == [200, 200]
        busy = post(2)
        assert busy.status_code == 429 and 0 < int(busy.headers["Retry-After"]) <= 120
        now[0] += dt.timedelta(seconds=int(busy.headers["Retry-After"]))
        assert post(3).status_code == 200


def _limits(**web: Any) -> WebLimits:
    """The `[web]` defaults with `web` changed, as `serve` builds its limits."""
    return WebLimits.of(WebSettings(**web))


def _from(settings: Settings, peer: str, limits: WebLimits) -> TestClient:
    return TestClient(create_app(settings, limits=limits), client=(peer, 40000))


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(settings: Settings) -> None:
    untrusted = _limits(subscribe_per_ip=2)
    # By default nobody is trusted, loopback included: the header cannot dodge the limit.
    with _from(settings, "127.0.0.1", untrusted) as client:
        answers = [
            client.post("/subscribe", data={**FORM, "email": f"a{n}@example.org",
                                            "csrf": _csrf(client, "/subscribe")},
                        headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code
            for n in range(3)
        ]  # fmt: skip
    assert answers == [200, 200, 429]
    proxied = _limits(subscribe_per_ip=2, trusted_proxies=("127.0.0.1", "10.0.0.0/8"))
    with _from(settings, "127.0.0.1", proxied) as client:

        def post(n: int, forwarded: str) -> int:
            data = {**FORM, "email": f"b{n}@example.org", "csrf": _csrf(client, "/subscribe")}
            headers = {"X-Forwarded-For": forwarded}
            return client.post("/subscribe", data=data, headers=headers).status_code

        # Each client has its own allowance behind the proxy chain (10.x is a trusted hop); a
        # client's own X-Forwarded-For entry to the left changes nothing.
        assert [post(0, "203.0.113.9"), post(1, "1.2.3.4, 203.0.113.9, 10.1.2.3")] == [200, 200]
        assert post(2, "9.9.9.9, 203.0.113.9") == 429
        assert post(3, "203.0.113.10") == 200


def test_trusted_proxies_must_be_addresses(instance: Instance) -> None:
    text = instance.config.read_text(encoding="utf-8")
    instance.config.write_text(
        text.replace("[web]\n", '[web]\ntrusted_proxies = ["10.0.0.0/8", "localhost"]\n', 1),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="'localhost' is not an IP address or network"):
        load_settings(instance.config)


def test_forged_altered_and_foreign_tokens_get_one_refusal(
    client: TestClient, settings: Settings, runner: CliRunner, instance: Instance
) -> None:
    cli(runner, instance, "subscribers", "add", "a@example.org", "--embassy", "de-berlin")
    me = _subscriber(settings, "a@example.org")
    unsubscribe, preferences, _ = recipient_links(settings, me.token_key)
    token = unsubscribe.rsplit("/", 1)[1]
    payload, mac = token.split(".")
    bad = [f"{payload}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}", f"x{payload}.{mac}", "forged",
           preferences.rsplit("/", 1)[1]]  # fmt: skip
    refusals = set()
    for candidate in bad:
        for path in (f"/unsubscribe/{candidate}", f"/confirm/{candidate}"):
            refusal = client.get(path)
            assert refusal.status_code == 400
            refusals.add(refusal.text)
        one_click = client.post(f"/unsubscribe/{candidate}", data={"List-Unsubscribe": "One-Click"})
        assert one_click.status_code == 400
        refusals.add(one_click.text)
    assert len(refusals) == 1
    assert _subscriber(settings, "a@example.org").status == "active"


def test_expired_confirmation_link_is_refused(settings: Settings, client: TestClient) -> None:
    _post(client, "/subscribe", FORM)
    confirm = _confirm_path(_mails(settings)[0])
    later = lambda: utcnow() + dt.timedelta(days=8)  # noqa: E731
    with TestClient(create_app(settings, clock=later)) as future:
        assert future.get(confirm).status_code == 400
    assert _subscriber(settings, "new@example.org").status == "pending"


def test_form_values_are_escaped_and_problems_explained(client: TestClient) -> None:
    script = '"><script>alert(1)</script>'
    answer = _post(client, "/subscribe", {**FORM, "email": script, "name": script,
                                          "embassy": "<b>x</b>", "sectors": ["<i>"]})  # fmt: skip
    assert answer.status_code == 400
    assert "<script>alert(1)" not in answer.text and "&lt;script&gt;" in answer.text
    assert "请填写有效的电子邮箱地址" in answer.text and "Choose your embassy" in answer.text
    assert "A chosen sector is not offered" in answer.text
    control = _post(client, "/subscribe", {**FORM, "name": "A\u202eB"})
    assert control.status_code == 400 and "invisible characters" in control.text


def test_pages_carry_safety_headers(client: TestClient) -> None:
    page = client.get("/subscribe")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-frame-options"] == "DENY"
    assert "httponly" in page.headers["set-cookie"].lower()
    assert client.get("/docs").status_code == 404
    assert "未找到页面" in client.get("/nowhere").text


def test_trailing_slash_redirects_to_the_configured_address_uncached(
    public_client: TestClient, settings: Settings
) -> None:
    client = public_client
    for path, target in [("/archive/", "/archive"), ("/subscribe/?lang=en", "/subscribe?lang=en"),
                         ("/archive/2020-01/", "/archive/2020-01")]:  # fmt: skip
        answer = client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
        assert answer.status_code == 307, path
        assert answer.headers["location"] == f"{settings.base_url}{target}"
        assert answer.headers["cache-control"] == "no-store"
    missing = client.get("/archive/1999-01", headers={"Host": "evil.example"})
    assert missing.status_code == 404 and missing.headers["cache-control"] == "no-store"
    assert client.get("/nowhere/", follow_redirects=False).status_code == 404
    assert client.get("/archive/").status_code == 200  # followed


def test_an_origin_matching_only_the_host_header_is_refused(client: TestClient) -> None:
    value = _csrf(client, "/subscribe")
    forged = client.post(
        "/subscribe", data={**FORM, "csrf": value},
        headers={"Host": "evil.example", "Origin": "http://evil.example"},
    )  # fmt: skip
    assert forged.status_code == 403


def test_archive_shows_only_issues_that_were_sent(
    public_client: TestClient,
    settings: Settings,
    runner: CliRunner,
    instance: Instance,
    tmp_path: Path,
) -> None:
    client = public_client
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    assert client.get("/archive/2020-01").status_code == 404
    assert "No issue has been sent yet" in client.get("/archive").text
    cli(runner, instance, "subscribers", "add", "a@example.org", "--embassy", "de-berlin")
    outbox = str(tmp_path / "sent")
    cli(runner, instance, "send", "2020-01", "--transport", "file", "--outbox", outbox)
    listing = client.get("/archive")
    assert 'href="http://127.0.0.1:8000/archive/2020-01"' in listing.text
    assert listing.headers["cache-control"].startswith("public")
    page = client.get("/archive/2020-01")
    assert page.status_code == 200 and "中国科技创新速递" in page.text and 'id="' in page.text
    assert client.get("/archive/2020-01?lang=en").status_code == 200
    assert client.get("/").headers.get("location") is None  # followed to the archive
    assert client.get("/archive/1999-01").status_code == 404
