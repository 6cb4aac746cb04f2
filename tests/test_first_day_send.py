"""A newcomer's first sends (issue 10): dry runs, test sends and rehearsals burn nothing; a send
says where its mail goes, why it found nothing, and exits 1 when nothing could be delivered;
`send` beside a running `newsletter run` hands it the campaign; `worker --once` sums up."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import socket
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.content.issue_intake import sample_issue_path
from newsletter.models import utcnow
from newsletter.services import sending
from newsletter.services.actors import Actor, Scope
from newsletter.testing.sink import LoopbackController
from newsletter.web import create_app
from tests.conftest import Instance, cli, database, fails, invoke, load_sample
from tests.processes import NEWSLETTER, Daemon, wait_for

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def smtp_env(smtp: LoopbackController) -> dict[str, str]:
    """An instance whose configured transport is smtp, pointed at the test server."""
    return {
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP__HOST": "127.0.0.1",
        "NEWSLETTER_SMTP__PORT": str(smtp.port),
    }


def snapshot(instance: Instance) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to show that a command changed nothing."""
    with database(instance) as engine:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return {
                name: sorted(map(tuple, conn.execute(table.select()).all()), key=repr)
                for name, table in meta.tables.items()
            }


AUDIT_TABLES = {"auditevent", "admin_event"}


def beyond_audit(tables: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """Every table but the audit trail (a test send is recorded there, and only there)."""
    return {name: rows for name, rows in tables.items() if name not in AUDIT_TABLES}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def campaigns(runner: CliRunner, instance: Instance) -> list[dict[str, Any]]:
    return list(json.loads(cli(runner, instance, "campaign", "list", "--json")))


def test_dry_run_says_who_would_get_what_and_changes_nothing(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    active = load_sample(runner, instance)
    cli(runner, instance, "subscribers", "add", "waiting@example.org", "--embassy", "de-berlin",
        "--status", "pending")  # fmt: skip
    before = snapshot(instance)
    plan = json.loads(cli(runner, instance, "send", "2020-01", "--dry-run", "--json"))
    text = cli(runner, instance, "send", "2020-01", "--dry-run")
    assert snapshot(instance) == before  # not a campaign, not a row, not a timestamp

    assert plan["recipients"] == len(active) and plan["campaign"] is None
    assert sum(plan["by_mission"].values()) == len(active)
    people = json.loads(cli(runner, instance, "subscribers", "list", "--json"))
    assert plan["by_mission"] == dict(
        sorted(Counter(p["embassy"] for p in people if p["status"] == "active").items())
    )
    assert 1 < plan["profiles"] < len(active)
    assert plan["skipped"] == {"not active (pending)": 1}
    assert plan["transport"] == "file" and not plan["rehearsal"]
    assert f"would send {len(active)} messages in {plan['profiles']} profiles" in text
    assert "nothing changed" in text and "skipped 1: not active (pending)" in text

    env = smtp_env(smtp_server)
    sent = json.loads(cli(runner, instance, "send", "2020-01", "--json", env=env))
    assert sent["sent"] == len(active)
    again = json.loads(cli(runner, instance, "send", "2020-01", "--dry-run", "--json", env=env))
    assert again["recipients"] == 0 and again["campaign"] == sent["campaign"]
    assert again["skipped"] == {"already sent": len(active), "not active (pending)": 1}


def test_test_send_goes_to_one_address_burns_nothing_and_its_links_name_nobody(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    active = load_sample(runner, instance)
    reader = sorted(active)[0]
    env = smtp_env(smtp_server)
    settings = instance.settings.overridden(
        {"transport": "smtp", "smtp.host": "127.0.0.1", "smtp.port": smtp_server.port}
    )
    before = beyond_audit(snapshot(instance))
    out = cli(runner, instance, "send", "2020-01", "--test-to", "editor@example.org",
              "--as", reader, "--json", env=env)  # fmt: skip
    done = json.loads(out)
    assert done["as"] == reader and done["to"] == "editor@example.org"
    [message] = smtp_server.handler.received
    assert message.rcpt == "editor@example.org"
    parsed = message.parsed()
    assert str(parsed["Subject"]).startswith("[测试 TEST] ")
    assert parsed["To"].addresses[0].addr_spec == "editor@example.org"
    # Rendered as the reader: their digest is the one `preview` shows them.
    html = parsed.get_body(("html",)).get_content()
    preview = sending.preview_digest(settings, "2020-01", reader, scope=Scope.all())
    assert preview.subject in str(parsed["Subject"])
    # No campaign, no ledger row: everything but the audit trail is as it was.
    assert beyond_audit(snapshot(instance)) == before
    assert campaigns(runner, instance) == []
    history = json.loads(cli(runner, instance, "subscribers", "show", reader, "--json"))
    events = history.get("history", history.get("events", []))
    assert any(e["action"] == "test_send" and "editor@example.org" in e["detail"] for e in events)

    # The editor forwards it, and someone clicks: the links verify, and change nobody.
    unsubscribe = re.search(r"<(http[^>]+/unsubscribe/[^>]+)>", parsed["List-Unsubscribe"])
    preferences = re.search(r'href="(http[^"]+/preferences/[^"]+)"', html)
    assert unsubscribe is not None and preferences is not None
    with TestClient(create_app(settings)) as browser:
        base = settings.base_url
        one_click = browser.post(
            unsubscribe.group(1).removeprefix(base), content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        page = browser.get(preferences.group(1).removeprefix(base))
    assert one_click.status_code >= 400 and page.status_code >= 400
    rows = json.loads(cli(runner, instance, "subscribers", "list", "--json"))
    assert {r["email"]: r["status"] for r in rows}[reader] == "active"

    # The real send later still goes to everyone, the reader too.
    cli(runner, instance, "send", "2020-01", env=env)
    assert Counter(m.rcpt for m in smtp_server.handler.received[1:]) == Counter(active)


def test_test_send_of_the_whole_issue_and_to_an_unreachable_server(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    load_sample(runner, instance)
    issue = json.loads(cli(runner, instance, "issue", "show", "2020-01", "--json"))
    cli(runner, instance, "send", "2020-01", "--test-to", "editor@example.org",
        env=smtp_env(smtp_server))  # fmt: skip
    [message] = smtp_server.handler.received
    # The text part wraps long titles: compared without white space.
    text = "".join(message.parsed().get_body(("plain",)).get_content().split())
    titles = ["".join(item["title"].split()) for item in issue["items"]]
    assert [t for t in titles if t not in text] == []  # untailored: every item
    error = fails(runner, instance, "send", "2020-01", "--test-to", "editor@example.org",
                  "--transport", "smtp", "--smtp-port", str(closed_port()))  # fmt: skip
    assert "test send of 2020-01 to editor@example.org failed" in error
    assert "Connection refused" in error
    usage = invoke(runner, instance, "send", "2020-01", "--as", "someone@example.org")
    assert usage.exit_code == 2 and "--test-to" in usage.output


def test_file_and_null_sends_on_an_smtp_instance_are_rehearsals(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController, tmp_path: Path
) -> None:
    active = load_sample(runner, instance)
    env = smtp_env(smtp_server)
    outbox = tmp_path / "rehearsal"
    result = invoke(runner, instance, "send", "2020-01", "--transport", "file",
                    "--outbox", str(outbox), env=env)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        f"a rehearsal (not a delivery) through the file transport: one .eml per message into {outbox}"
        in result.stderr
    )
    assert f"{len(active)} sent" in result.stdout
    # One diplomat's copy is found by their address.
    reader = sorted(active)[0]
    local, domain = reader.split("@")
    [copy] = outbox.glob(f"*-{local}_at_{domain}.eml")
    assert copy.read_bytes().count(b"\r\n\r\n") >= 1
    assert len(list(outbox.glob("*.eml"))) == len(active)
    cli(runner, instance, "send", "2020-01", "--transport", "null", env=env)
    assert smtp_server.handler.received == []
    # Rehearsed, not sent: the issue can still be corrected, and the archive does not show it.
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    public = instance.settings.overridden({"archive.visibility": "public"})
    with TestClient(create_app(public)) as browser:
        assert "No issue has been sent yet" in browser.get("/archive").text

    # The real send still reaches everyone, and the rehearsals stay apart in the list.
    real = json.loads(cli(runner, instance, "send", "2020-01", "--json", env=env))
    assert real["sent"] == len(active) and not real["rehearsal"]
    assert Counter(m.rcpt for m in smtp_server.handler.received) == Counter(active)
    listed = campaigns(runner, instance)
    assert [c["sent"] for c in listed] == [len(active)] * 3
    assert [(c["transport"], c["rehearsal"]) for c in listed] == [
        ("file", True), ("null", True), ("smtp", False)
    ]  # fmt: skip
    table = cli(runner, instance, "campaign", "list")
    assert "rehearsal" in table and "True" in table and "False" in table
    with database(instance) as engine, engine.connect() as conn:
        kinds = conn.execute(sa.text("SELECT transport, rehearsal FROM campaign ORDER BY id")).all()
    assert [tuple(k) for k in kinds] == [("file", True), ("null", True), ("smtp", False)]
    assert "already" in fails(runner, instance, "issue", "import", str(sample_issue_path()))


def test_a_send_that_finds_nothing_says_why_and_where_the_mail_went(
    runner: CliRunner, instance: Instance
) -> None:
    active = load_sample(runner, instance)
    first = invoke(runner, instance, "send", "2020-01")
    assert first.exit_code == 0, first.output
    outbox = instance.settings.path(instance.settings.outbox).resolve()
    assert (
        f"2020-01: sending through the file transport: one .eml per message into {outbox}"
        in first.stderr
    )
    [campaign] = campaigns(runner, instance)
    again = cli(runner, instance, "send", "2020-01")
    with database(instance) as engine, engine.connect() as conn:
        day = conn.execute(sa.text("SELECT max(sent_at) FROM delivery")).scalar()
    assert (
        f"nothing to send: all {len(active)} recipients of 2020-01 were sent by campaign "
        f"{campaign['id']} on {str(day)[:10]} through the file transport"
    ) in again
    as_json = json.loads(cli(runner, instance, "send", "2020-01", "--json"))
    assert as_json["sent"] == 0 and "were sent by campaign" in as_json["nothing_sent"]


def test_an_unreachable_server_exits_1_with_the_reason_and_the_next_step(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    load_sample(runner, instance)
    port = str(closed_port())
    error = fails(runner, instance, "send", "2020-01", "--transport", "smtp",
                  "--smtp-host", "127.0.0.1", "--smtp-port", port)  # fmt: skip
    [campaign] = campaigns(runner, instance)
    assert campaign["state"] == "paused"
    assert (
        f"error: campaign {campaign['id']} of 2020-01 paused: cannot reach the SMTP server" in error
    )
    assert f"`newsletter campaign resume {campaign['id']}`" in error
    assert "Connection refused" in error
    # `demo --smtp` sends through the same service.
    demo = runner.invoke(
        app,
        ["demo", "--dir", str(tmp_path / "demo"), "--smtp", f"127.0.0.1:{port}"],
    )
    assert demo.exit_code == 1, demo.output
    assert (
        "paused: cannot reach the SMTP server" in demo.stderr and "campaign resume" in demo.stderr
    )


def test_at_a_terminal_send_shows_the_counts_and_asks(
    runner: CliRunner, instance: Instance
) -> None:
    active = load_sample(runner, instance)

    def at_a_terminal(answer: bytes, *args: str) -> tuple[int, str]:
        # stdin a pseudo-terminal, as a staff member's shell gives it; output read from pipes.
        primary, secondary = pty.openpty()
        try:
            process = subprocess.Popen(
                [str(NEWSLETTER), "--config", str(instance.config), "send", "2020-01", *args],
                stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            os.write(primary, answer)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            os.close(primary)
            os.close(secondary)
        return process.returncode, (stdout + stderr).decode()

    code, said = at_a_terminal(b"n\n")
    assert code == 1 and f"would send {len(active)} messages" in said
    assert f"send {len(active)} messages now? [y/N]" in said and "nothing sent" in said
    assert campaigns(runner, instance) == []
    code, said = at_a_terminal(b"", "--yes")
    assert code == 0 and f"{len(active)} sent" in said and "now?" not in said


@pytest.fixture
def run_daemon(
    instance: Instance, smtp_server: LoopbackController
) -> Iterator[Callable[[], Daemon]]:
    started: list[Daemon] = []
    env = {
        **os.environ, **smtp_env(smtp_server),
        "NEWSLETTER_SCHEDULE__POLL_SECONDS": "0.2", "NEWSLETTER_DELIVERY__POLL_SECONDS": "0.3",
    }  # fmt: skip

    def start() -> Daemon:
        started.append(Daemon(instance, env, f"run{len(started)}"))
        return started[-1]

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.terminate()
        assert "Traceback" not in daemon.output, daemon.output


@SQLITE
def test_send_beside_a_running_newsletter_run_hands_it_the_campaign(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    run_daemon: Callable[[], Daemon],
) -> None:
    active = load_sample(runner, instance)
    daemon = run_daemon()
    daemon.leads()
    lock = instance.dir / "newsletter.db.sender.lock"
    wait_for(lambda: lock.exists() and "pid" in lock.read_text(), "the sender to take its lock")
    env = smtp_env(smtp_server)
    said = cli(runner, instance, "send", "2020-01", env=env)
    pid = daemon.process.pid
    assert f"messages queued for the sender already running on this database (pid {pid}:" in said
    assert "follow it with `newsletter campaign status" in said
    wait_for(lambda: Counter(m.rcpt for m in smtp_server.handler.received) == Counter(active),
             "the running sender to send the campaign")  # fmt: skip
    wait_for(
        lambda: campaigns(runner, instance)[0]["state"] == "finished", "the campaign to finish"
    )
    [campaign] = campaigns(runner, instance)
    again = cli(runner, instance, "send", "2020-01", env=env)
    assert (
        f"nothing to send: all {len(active)} recipients of 2020-01 were sent by campaign "
        f"{campaign['id']} on "
    ) in again and again.strip().endswith("through the smtp transport")
    # A second sender cannot run beside it; the refusal names it and what works instead.
    worker = fails(runner, instance, "worker", "--once", env=env)
    assert f"another sender (pid {pid}: newsletter" in worker and "run)" in worker
    assert "`newsletter send SLUG` hands it one" in worker
    rehearsal = fails(runner, instance, "send", "2020-01", "--transport", "null", env=env)
    assert "stop that process first" in rehearsal
    assert daemon.terminate() == 0
    assert Counter(m.rcpt for m in smtp_server.handler.received) == Counter(active)


def test_worker_once_ends_with_a_summary(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    active = load_sample(runner, instance)
    env = smtp_env(smtp_server)
    idle = invoke(runner, instance, "worker", "--once", env=env)
    assert idle.exit_code == 0 and "no campaign had rows due" in idle.stderr
    smtp_server.handler.script(sorted(active)[0], "451 4.3.0 try again later")
    prepared = sending.prepare_campaign(instance.settings, "2020-01", actor=Actor.cli())
    result = invoke(runner, instance, "worker", "--once", env=env)
    assert result.exit_code == 0, result.output
    [summary] = [line for line in result.stderr.splitlines() if "deferred" in line]
    assert re.fullmatch(
        rf"worker \S+: campaign {prepared.campaign} \(2020-01\): {len(active) - 1} sent, "
        r"0 failed, 1 deferred \(sending\)",
        summary,
    ), summary


def test_a_send_before_its_scheduled_time_says_what_waits(
    runner: CliRunner, instance: Instance
) -> None:
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    for email in ("a.one@example.org", "b.two@example.org"):
        cli(runner, instance, "subscribers", "add", email, "--embassy", "de-berlin")
    cli(runner, instance, "schedule", "2020-01", "--at", "2035-01-05T09:00:00+01:00")
    plan = json.loads(cli(runner, instance, "send", "2020-01", "--dry-run", "--json"))
    assert plan["recipients"] == 0
    assert plan["skipped"] == {"waiting for a scheduled send (`newsletter schedule list`)": 2}
    said = cli(runner, instance, "send", "2020-01")
    assert (
        "nothing due yet: 2 recipients of 2020-01 wait for the scheduled send of campaign" in said
    )
    assert "(the first at 2035-01-05T08:00+00:00)" in said


def test_the_dry_run_counts_as_the_send_does_for_digest_readers_and_leave(
    runner: CliRunner, instance: Instance
) -> None:
    active = load_sample(runner, instance)
    weekly, away = sorted(active)[:2]
    cli(runner, instance, "subscribers", "edit", weekly, "--mode", "weekly", "--weekday", "TUE")
    back = (utcnow() + dt.timedelta(days=30)).date().isoformat()
    cli(runner, instance, "subscribers", "edit", away, "--mode", "paused", "--until", back)
    plan = json.loads(cli(runner, instance, "send", "2020-01", "--dry-run", "--json"))
    assert plan["recipients"] == len(active) - 2
    assert plan["skipped"] == {
        "reads a weekly or monthly digest instead (`newsletter subscribers show EMAIL`)": 1,
        "on leave (paused until a later date)": 1,
    }
    sent = json.loads(cli(runner, instance, "send", "2020-01", "--json"))
    assert sent["sent"] == plan["recipients"]
