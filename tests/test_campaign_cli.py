"""Campaign control from the command line: pause, resume, cancel, report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from newsletter.content.issue_intake import sample_issue_path
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance, cli, fails


def _setup(runner: CliRunner, instance: Instance) -> None:
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    cli(
        runner,
        instance,
        "subscribers",
        "add",
        "ok@example.org",
        "--embassy",
        "de-berlin",
        "--name",
        "=HYPERLINK(1)",
    )
    cli(runner, instance, "subscribers", "add", "gone@example.org", "--embassy", "fr-paris")
    cli(runner, instance, "subscribers", "add", "later@example.org", "--embassy", "jp-tokyo")


def _send(smtp: LoopbackController) -> tuple[str, ...]:
    """`newsletter send` of the sample issue to the test SMTP server, with a JSON report."""
    return ("send", "2020-01", "--transport", "smtp", "--smtp-port", str(smtp.port), "--json")


def test_report_shows_every_recipient_with_the_smtp_reply(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController, tmp_path: Path
) -> None:
    _setup(runner, instance)
    smtp_server.handler.script("gone@example.org", "550 5.1.1 no such user here")
    out = cli(runner, instance, *_send(smtp_server))
    assert json.loads(out)["failed"] == 1
    report = json.loads(
        cli(runner, instance, "campaign", "report", "1", "--json", "--csv", str(tmp_path / "r.csv"))
    )
    by_email = {r["email"]: r for r in report["recipients"]}
    assert by_email["gone@example.org"]["state"] == "failed"
    assert "5.1.1" in by_email["gone@example.org"]["reply"]
    assert by_email["ok@example.org"]["state"] == "sent"
    assert report["by_embassy"]["fr-paris"] == {"failed": 1}
    with (tmp_path / "r.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["email"] for r in rows} == set(by_email)
    status = json.loads(cli(runner, instance, "campaign", "status", "1", "--json"))
    assert status["state"] == "finished" and status["sent"] == 2 and status["failed"] == 1
    text = cli(runner, instance, "campaign", "report", "1")
    assert "gone@example.org" in text and "no such user" in text


def test_pause_resume_cancel(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    _setup(runner, instance)
    cli(runner, instance, "schedule", "2020-01", "--at", "2035-03-01T09:00:00+00:00")
    cli(runner, instance, "campaign", "pause", "1")
    err = fails(runner, instance, *_send(smtp_server))
    assert "campaign 1 is paused" in err and "campaign resume 1" in err
    err = fails(runner, instance, "campaign", "pause", "1")
    assert err.startswith("error: campaign 1 is paused; it cannot be paused")
    cli(runner, instance, "campaign", "resume", "1")
    cli(runner, instance, "campaign", "cancel", "1")
    status = json.loads(cli(runner, instance, "campaign", "status", "1", "--json"))
    assert status["state"] == "cancelled" and status["skipped"] == 3 and status["sent"] == 0
    plans = json.loads(cli(runner, instance, "schedule", "list", "--json"))
    assert plans and {p["state"] for p in plans} == {"cancelled"}
    assert smtp_server.handler.received == []
    err = fails(runner, instance, "campaign", "resume", "1")
    assert "cancelled" in err
    # Each control from the shell joins the audit chain, as the console's do; a refused one not.
    events = json.loads(cli(runner, instance, "audit", "list", "--json", "--action", "campaign"))
    assert [e["action"] for e in reversed(events)] == [
        "campaign.pause", "campaign.resume", "campaign.cancel",
    ]  # fmt: skip
    assert all(e["actor"].startswith("cli:") and e["via"] == "cli" for e in events), events
    err = fails(runner, instance, "campaign", "status", "42")
    assert "campaign '42' not found" in err


def test_send_for_an_unknown_issue_names_the_fix(runner: CliRunner, instance: Instance) -> None:
    err = fails(runner, instance, "send", "1999-09")
    assert err.strip() == "error: issue '1999-09' not found; see `newsletter issue list`"
