"""End to end: the sample issue, the sample lists, a real SMTP server; SQLite and PostgreSQL."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

from sqlmodel import Session
from typer.testing import CliRunner

from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import make_engine
from newsletter.directory import bundled_data_dir
from newsletter.models import SubscriberStatus
from newsletter.subscriptions import store
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance, cli

LISTS = bundled_data_dir() / "lists"


def _load_sample(runner: CliRunner, instance: Instance) -> list[dict[str, object]]:
    cli(runner, instance, "subscribers", "import", str(LISTS))
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    cli(runner, instance, "subscribers", "add", "pending.person@example.org", "--embassy", "de-berlin",
        "--status", "pending")  # fmt: skip
    cli(runner, instance, "subscribers", "add", "gone.person@example.org", "--embassy", "fr-paris")
    engine = make_engine(instance.settings.resolved_database_url)
    with Session(engine) as session:
        gone = store.find(session, "gone.person@example.org")
        store.set_status(session, gone, SubscriberStatus.UNSUBSCRIBED, actor="test", via="cli")
        session.commit()
    engine.dispose()
    return list(json.loads(cli(runner, instance, "subscribers", "list", "--json")))


def _send(runner: CliRunner, instance: Instance, smtp: LoopbackController) -> dict[str, object]:
    out = cli(runner, instance, "send", "2020-01", "--transport", "smtp",
              "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp.port), "--json")  # fmt: skip
    return dict(json.loads(out))


def test_each_active_subscriber_gets_one_tailored_digest_once(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    subscribers = _load_sample(runner, instance)
    active = {str(s["email"]) for s in subscribers if s["status"] == "active"}
    language = {str(s["email"]): s["language"] for s in subscribers}
    assert len(active) >= 60
    assert "pending.person@example.org" not in active and "gone.person@example.org" not in active

    report = _send(runner, instance, smtp_server)
    received = smtp_server.handler.received
    assert report["sent"] == len(active) and report["failed"] == 0
    assert Counter(r.rcpt for r in received) == Counter(active)
    assert 1 < int(str(report["profiles"])) < len(active)

    domain = instance.settings.domain
    host = socket.gethostname()
    assert set(smtp_server.handler.helo_names) == {domain}
    for message in received:
        parsed = message.parsed()
        assert parsed.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
        # Unfolding keeps the folding space before a value that starts on a continuation line.
        subject = str(parsed["Subject"]).strip()
        name = (
            "中国科技创新速递 2020年第1期"
            if language[message.rcpt] == "zh"
            else "Express 2020 No. 1"
        )
        assert name in subject, subject
        assert parsed["To"].addresses[0].addr_spec == message.rcpt
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert (
            "/unsubscribe/" in parsed["List-Unsubscribe"]
            and "mailto:" in parsed["List-Unsubscribe"]
        )
        assert parsed["List-Id"] == f"<{instance.settings.list_id}.{domain}>"
        assert parsed["Message-ID"].endswith(f"@{domain}>") and host not in parsed["Message-ID"]
        assert b"=?utf-8?" in message.data.split(b"\r\n\r\n")[0]  # RFC 2047 subject

    again = _send(runner, instance, smtp_server)
    assert again["sent"] == 0
    assert len(smtp_server.handler.received) == len(active)
    campaigns = json.loads(cli(runner, instance, "campaign", "list", "--json"))
    assert campaigns[0]["state"] == "finished" and campaigns[0]["sent"] == len(active)


def test_digest_follows_the_explanation(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController, tmp_path: Path
) -> None:
    _load_sample(runner, instance)
    cli(runner, instance, "subscribers", "add", "bio.only@example.org", "--embassy", "de-berlin",
        "--sectors", "biomedicine", "--name", "王芳")  # fmt: skip
    decisions = json.loads(
        cli(
            runner, instance, "explain", "2020-01", "--subscriber", "bio.only@example.org", "--json"
        )
    )
    issue = json.loads(cli(runner, instance, "issue", "show", "2020-01", "--json"))
    titles = {i["id"]: i["title"] for i in issue["items"]}
    included = {d["item"] for d in decisions if d["included"]}
    excluded = {d["item"] for d in decisions if not d["included"]}
    assert included and excluded
    assert all(set(d) >= {"item", "section", "included", "reason"} for d in decisions)

    _send(runner, instance, smtp_server)
    [mine] = [r for r in smtp_server.handler.received if r.rcpt == "bio.only@example.org"]
    parsed = mine.parsed()
    html = parsed.get_body(("html",)).get_content()
    text = parsed.get_body(("plain",)).get_content()
    assert "王芳" in html and "王芳" in text
    for item_id in included:
        assert titles[item_id] in text
    preview = tmp_path / "preview.html"
    cli(
        runner,
        instance,
        "preview",
        "2020-01",
        "--subscriber",
        "bio.only@example.org",
        "-o",
        str(preview),
    )
    assert "王芳" in preview.read_text(encoding="utf-8")
    assert len(html.encode()) < 102_000


def test_send_after_a_cancelled_schedule_sends_now(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    for email in ("a.one@example.org", "b.two@example.org"):
        cli(runner, instance, "subscribers", "add", email, "--embassy", "de-berlin")
    cli(runner, instance, "schedule", "2020-01", "--at", "2035-01-05T09:00:00+01:00")
    plans = json.loads(cli(runner, instance, "schedule", "list", "--json"))
    assert [p["state"] for p in plans] == ["planned"]
    early = _send(runner, instance, smtp_server)
    assert early["sent"] == 0  # scheduled for 2035: `send` does not jump the plan
    cli(runner, instance, "schedule", "cancel", str(plans[0]["id"]))
    now = _send(runner, instance, smtp_server)
    assert now["sent"] == 2
    assert sorted(r.rcpt for r in smtp_server.handler.received) == [
        "a.one@example.org",
        "b.two@example.org",
    ]
