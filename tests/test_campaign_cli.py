"""Campaign control from the command line: pause, resume, cancel, report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.content.issue_intake import sample_issue_path
from newsletter.delivery.sink import LoopbackController
from tests.conftest import Instance


def _run(runner: CliRunner, instance: Instance, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--config", str(instance.config), *args])
    return result.exit_code, result.stdout, result.stderr


def _ok(runner: CliRunner, instance: Instance, *args: str) -> str:
    code, out, err = _run(runner, instance, *args)
    assert code == 0, err
    return out


def _setup(runner: CliRunner, instance: Instance) -> None:
    _ok(runner, instance, "issue", "import", str(sample_issue_path()))
    _ok(
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
    _ok(runner, instance, "subscribers", "add", "gone@example.org", "--embassy", "fr-paris")
    _ok(runner, instance, "subscribers", "add", "later@example.org", "--embassy", "jp-tokyo")


def _send(runner: CliRunner, instance: Instance, smtp: LoopbackController) -> tuple[int, str, str]:
    return _run(
        runner,
        instance,
        "send",
        "2020-01",
        "--transport",
        "smtp",
        "--smtp-port",
        str(smtp.port),
        "--json",
    )


def test_report_shows_every_recipient_with_the_smtp_reply(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController, tmp_path: Path
) -> None:
    _setup(runner, instance)
    smtp_server.handler.script("gone@example.org", "550 5.1.1 no such user here")
    code, out, _ = _send(runner, instance, smtp_server)
    assert code == 0 and json.loads(out)["failed"] == 1
    report = json.loads(
        _ok(runner, instance, "campaign", "report", "1", "--json", "--csv", str(tmp_path / "r.csv"))
    )
    by_email = {r["email"]: r for r in report["recipients"]}
    assert by_email["gone@example.org"]["state"] == "failed"
    assert "5.1.1" in by_email["gone@example.org"]["reply"]
    assert by_email["ok@example.org"]["state"] == "sent"
    assert report["by_embassy"]["fr-paris"] == {"failed": 1}
    with (tmp_path / "r.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["email"] for r in rows} == set(by_email)
    status = json.loads(_ok(runner, instance, "campaign", "status", "1", "--json"))
    assert status["state"] == "finished" and status["sent"] == 2 and status["failed"] == 1
    text = _ok(runner, instance, "campaign", "report", "1")
    assert "gone@example.org" in text and "no such user" in text


def test_pause_resume_cancel(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    _setup(runner, instance)
    _ok(runner, instance, "schedule", "2020-01", "--at", "2035-03-01T09:00:00+00:00")
    _ok(runner, instance, "campaign", "pause", "1")
    code, _, err = _send(runner, instance, smtp_server)
    assert code == 1 and "campaign 1 is paused" in err and "campaign resume 1" in err
    code, _, err = _run(runner, instance, "campaign", "pause", "1")
    assert code == 1 and err.startswith("error: campaign 1 is paused; it cannot be paused")
    _ok(runner, instance, "campaign", "resume", "1")
    _ok(runner, instance, "campaign", "cancel", "1")
    status = json.loads(_ok(runner, instance, "campaign", "status", "1", "--json"))
    assert status["state"] == "cancelled" and status["skipped"] == 3 and status["sent"] == 0
    plans = json.loads(_ok(runner, instance, "schedule", "list", "--json"))
    assert plans and {p["state"] for p in plans} == {"cancelled"}
    assert smtp_server.handler.received == []
    code, _, err = _run(runner, instance, "campaign", "resume", "1")
    assert code == 1 and "cancelled" in err
    code, _, err = _run(runner, instance, "campaign", "status", "42")
    assert code == 1 and "campaign '42' not found" in err


def test_send_for_an_unknown_issue_names_the_fix(runner: CliRunner, instance: Instance) -> None:
    code, _, err = _run(runner, instance, "send", "1999-09")
    assert (
        code == 1 and err.strip() == "error: issue '1999-09' not found; see `newsletter issue list`"
    )
