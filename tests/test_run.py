"""A real `newsletter run`: due jobs sent to aiosmtpd, SIGTERM, SIGKILL and restarts, two daemons."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from typer.testing import CliRunner

from newsletter.models import utcnow
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance, at_in, cli, load_sample, plans_json
from tests.processes import Daemon, free_port, wait_for

# How far ahead a test plans a send: past the `schedule` command's own start-up (it imports its
# module when it runs) on a busy machine, or the time has passed before the command checks it.
AHEAD = 5.0


@pytest.fixture
def daemons(smtp_server: LoopbackController, instance: Instance) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []
    env = {
        **os.environ,
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP__HOST": "127.0.0.1",
        "NEWSLETTER_SMTP__PORT": str(smtp_server.port),
        # Quick to notice new jobs and a free lock; idle workers look every second.
        "NEWSLETTER_SCHEDULE__POLL_SECONDS": "0.2",
        "NEWSLETTER_SCHEDULE__LOCK_RETRY_SECONDS": "0.3",
        "NEWSLETTER_DELIVERY__POLL_SECONDS": "1",
    }

    def start(*args: str, extra: dict[str, str] | None = None) -> Daemon:
        daemon = Daemon(instance, {**env, **(extra or {})}, f"run{len(started)}", *args)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.kill()
        assert "Traceback" not in daemon.output, daemon.output


def passed(moment: str | dt.datetime, plus: float = 0.0) -> Callable[[], bool]:
    """True once the clock is `plus` seconds past `moment` (the daemons read the same clock)."""
    when = dt.datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return lambda: utcnow() > when + dt.timedelta(seconds=plus)


def received(smtp: LoopbackController) -> Counter[str]:
    return Counter(r.rcpt for r in smtp.handler.received)


def status(runner: CliRunner, instance: Instance, campaign: int) -> dict[str, int]:
    return dict(json.loads(cli(runner, instance, "campaign", "status", str(campaign), "--json")))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_due_job_is_sent_once_and_sigterm_exits_cleanly(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    daemons: Callable[..., Daemon],
) -> None:
    active = load_sample(runner, instance)
    daemon = daemons()
    daemon.leads()
    due = at_in(AHEAD)
    [plan] = json.loads(cli(runner, instance, "schedule", "2020-01", "--at", due, "--json"))
    wait_for(lambda: sum(received(smtp_server).values()) >= len(active), "every digest sent")
    assert received(smtp_server) == Counter(active)
    campaign = int(plan["campaign"])
    wait_for(lambda: status(runner, instance, campaign)["sent"] == len(active), "all recorded")
    report = json.loads(cli(runner, instance, "campaign", "report", str(campaign), "--json"))
    sent_at = sorted(dt.datetime.fromisoformat(r["sent_at"]) for r in report["recipients"])
    due_at = dt.datetime.fromisoformat(plan["next_run_utc"])
    assert due_at <= sent_at[0]  # not before the due time
    [listed] = plans_json(runner, instance)
    assert listed["state"] == "fired" and listed["sent"] == len(active)
    assert daemon.terminate() == 0
    assert "run: stopped" in daemon.output
    assert received(smtp_server) == Counter(active)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_killed_before_due_then_restarted_within_grace_sends_once(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    daemons: Callable[..., Daemon],
) -> None:
    active = load_sample(runner, instance)
    first = daemons()
    first.leads()
    due = at_in(AHEAD)
    cli(runner, instance, "schedule", "2020-01", "--at", due)
    first.kill()
    wait_for(passed(due), "the due time to pass with no daemon running")
    assert not smtp_server.handler.received
    second = daemons()
    wait_for(lambda: sum(received(smtp_server).values()) >= len(active), "late sends")
    assert second.terminate() == 0
    assert received(smtp_server) == Counter(active)
    [listed] = plans_json(runner, instance)
    assert listed["state"] == "fired"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_killed_before_due_and_back_past_grace_is_missed(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    daemons: Callable[..., Daemon],
) -> None:
    tiny = {"NEWSLETTER_SCHEDULE__MISFIRE_GRACE_HOURS": "0.0003"}  # about 1 s
    active = load_sample(runner, instance)
    first = daemons(extra=tiny)
    first.leads()
    due = at_in(AHEAD)
    [plan] = json.loads(cli(runner, instance, "schedule", "2020-01", "--at", due, "--json",
                            env=tiny))  # fmt: skip
    first.kill()
    # Past the due time and past the grace (APScheduler's: 2 whole seconds), however long the
    # kill took.
    wait_for(passed(due, 3.5), "the grace to run out")
    second = daemons(extra=tiny)
    second.leads()
    wait_for(lambda: plans_json(runner, instance)[0]["missed"] == len(active), "plan missed")
    assert plans_json(runner, instance)[0]["state"] == "missed"
    assert status(runner, instance, plan["campaign"])["skipped"] == len(active)
    assert second.terminate() == 0
    assert not smtp_server.handler.received
    assert "was missed" in second.output  # APScheduler's own warning reaches the log


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_second_daemon_stands_by_then_takes_over(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    daemons: Callable[..., Daemon],
) -> None:
    active = load_sample(runner, instance)
    first = daemons()
    first.leads()
    second = daemons()
    second.says("standing by, not firing jobs")
    first.kill()
    second.leads()
    cli(runner, instance, "schedule", "2020-01", "--at", at_in(AHEAD))
    wait_for(lambda: sum(received(smtp_server).values()) >= len(active), "sends after takeover")
    assert second.terminate() == 0
    assert received(smtp_server) == Counter(active)


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_two_daemons_on_postgresql_send_each_recipient_once(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    daemons: Callable[..., Daemon],
) -> None:
    assert instance.settings.resolved_database_url.startswith("postgresql")
    active = load_sample(runner, instance)
    a, b = daemons(), daemons()
    wait_for(lambda: "fires jobs" in a.output + b.output, "a leader")
    leader, standby = (a, b) if "fires jobs" in a.output else (b, a)
    standby.says("standing by")
    [plan] = json.loads(
        cli(runner, instance, "schedule", "2020-01", "--at", at_in(AHEAD), "--json")
    )
    # Every row recorded: a row sent twice would have reached the server before its record.
    wait_for(
        lambda: status(runner, instance, plan["campaign"])["sent"] == len(active),
        "every row recorded as sent",
    )
    assert received(smtp_server) == Counter(active)

    leader.kill()
    standby.leads()
    cli(runner, instance, "subscribers", "add", "late.joiner@example.org", "--embassy", "de-berlin")
    cli(runner, instance, "schedule", "2020-01", "--at", at_in(AHEAD))
    wait_for(lambda: "late.joiner@example.org" in received(smtp_server), "the newcomer's digest")
    assert standby.terminate() == 0
    assert received(smtp_server) == Counter([*active, "late.joiner@example.org"])


@pytest.mark.skipif(
    importlib.util.find_spec("newsletter.web") is None, reason="newsletter.web not written yet"
)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_run_with_web_serves_pages_and_stops_on_sigterm(
    runner: CliRunner, instance: Instance, daemons: Callable[..., Daemon]
) -> None:
    port = free_port()
    daemon = daemons("--web", "--port", str(port))
    daemon.leads()

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/subscribe", timeout=2) as page:
                return bool(page.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_for(answers, "the web pages")
    assert daemon.terminate() == 0
