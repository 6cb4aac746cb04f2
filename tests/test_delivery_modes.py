"""Delivery modes: each issue, weekly or monthly on a weekday, paused until a date (leave).

And arrival: a newcomer or a successor gets the latest issue once, never older back issues.
Through the real CLI on SQLite and PostgreSQL, sends through the real SMTP sink, digest runs
with an injected clock.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from newsletter.config import load_settings, sample_config
from newsletter.errors import NewsletterError
from newsletter.models import Subscriber, SubscriberStatus, utcnow
from newsletter.scheduling import digests
from newsletter.scheduling.arrival import latest_published, may_receive
from newsletter.scheduling.cadence import (
    Cadence,
    CadenceInputError,
    Mode,
    parse_cadence,
)
from newsletter.services import sending
from newsletter.subscriptions import store
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance, cli, database, fails, invoke, load_sample

SIX_HOURS = dt.timedelta(hours=6)
SAMPLE = Path(__file__).parent.parent / "newsletter" / "content" / "samples" / "2020-01.yaml"
PAUSED = "anna.schmidt@de-berlin.example.org"
WEEKLY = "chen.hao@de-berlin.example.org"


# --- the rules (pure) -------------------------------------------------------------------------


@given(st.dates(dt.date(2020, 1, 1), dt.date(2040, 12, 31)), st.integers(1, 7))
def test_weekly_serves_one_day_a_week_and_monthly_one_day_a_month(
    start: dt.date, weekday: int
) -> None:
    week = [start + dt.timedelta(days=i) for i in range(7)]
    assert [d.isoweekday() for d in week if Cadence(Mode.WEEKLY, weekday).digest_day(d)] == [
        weekday
    ]
    first = start.replace(day=1)
    month = [first + dt.timedelta(days=i) for i in range(31)]
    month = [d for d in month if d.month == first.month]
    served = [d for d in month if Cadence(Mode.MONTHLY, weekday).digest_day(d)]
    assert len(served) == 1 and served[0].isoweekday() == weekday and served[0].day <= 7
    # Neither takes issues as they are sent; every issue does.
    assert not Cadence(Mode.WEEKLY, weekday).takes_each_issue(start)
    assert Cadence().takes_each_issue(start) and Cadence().digest_day(start)


@given(st.dates(dt.date(2020, 1, 1), dt.date(2040, 12, 31)), st.integers(1, 60))
def test_a_pause_holds_everything_back_until_its_date(today: dt.date, days: int) -> None:
    until = today + dt.timedelta(days=days)
    weekly = Cadence(Mode.WEEKLY, until.isoweekday())
    paused = parse_cadence("paused", weekday=None, until=until.isoformat(), current=weekly,
                           today=today)  # fmt: skip
    assert paused == Cadence(Mode.WEEKLY, until.isoweekday(), until)  # the mode stays
    for offset in range(days):
        day = today + dt.timedelta(days=offset)
        assert not paused.digest_day(day) and not paused.takes_each_issue(day)
    assert paused.digest_day(until)  # back on the date, in their own mode
    assert parse_cadence("each", weekday=None, until=None, current=paused, today=today) == (
        Cadence()
    )


@pytest.mark.parametrize(
    ("mode", "weekday", "until", "says"),
    [
        ("fortnightly", None, None, "use each, weekly, monthly or paused"),
        ("weekly", None, None, "needs --weekday"),
        ("weekly", "funday", None, "MON or TUE"),
        ("each", "MON", None, "--weekday goes with"),
        ("paused", None, None, "needs --until"),
        ("paused", None, "2026-01-01", "not after today"),
        ("paused", None, "soon", "YYYY-MM-DD"),
        ("paused", None, "2099-01-01", "two years"),
        ("weekly", "MON", "2026-12-24", "--until goes with --mode paused"),
    ],
)
def test_bad_modes_name_what_to_fix(
    mode: str, weekday: str | None, until: str | None, says: str
) -> None:
    with pytest.raises(CadenceInputError, match=says):
        parse_cadence(mode, weekday=weekday, until=until, current=Cadence(),
                      today=dt.date(2026, 12, 2))  # fmt: skip


# --- through the CLI ----------------------------------------------------------------------------


def test_staff_set_modes_and_each_change_is_audited(runner: CliRunner, instance: Instance) -> None:
    load_sample(runner, instance)
    weekly = json.loads(cli(runner, instance, "subscribers", "edit", WEEKLY, "--mode", "weekly",
                            "--weekday", "TUE", "--json"))  # fmt: skip
    assert (weekly["mode"], weekly["weekday"], weekly["described"]) == (
        "weekly",
        2,
        "weekly on Tuesday",
    )
    until = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    out = invoke(runner, instance, "subscribers", "edit", WEEKLY, "--mode", "paused",
                 "--until", until)  # fmt: skip
    assert out.exit_code == 0
    assert f"weekly on Tuesday, paused until {until} (was weekly on Tuesday)" in out.stderr
    monthly = json.loads(cli(runner, instance, "subscribers", "edit", PAUSED, "--mode",
                             "monthly", "--weekday", "fri", "--json"))  # fmt: skip
    assert monthly["described"] == "monthly on the first Friday"

    assert "needs --weekday" in fails(runner, instance, "subscribers", "edit", PAUSED,
                                      "--mode", "weekly")  # fmt: skip
    assert "not found" in fails(runner, instance, "subscribers", "edit",
                                "nobody@example.org", "--mode", "each")  # fmt: skip
    with database(instance) as db, Session(db) as session:
        row = session.exec(select(Subscriber).where(col(Subscriber.email) == WEEKLY)).one()
        assert (row.delivery_mode, row.mode_weekday, str(row.paused_until)) == ("weekly", 2, until)
    shown = json.loads(cli(runner, instance, "subscribers", "show", WEEKLY, "--json"))
    changes = [e for e in shown["history"] if e["action"] == "mode_changed"]
    assert [e["detail"] for e in changes] == [
        "each issue -> weekly on Tuesday",
        f"weekly on Tuesday -> weekly on Tuesday, paused until {until}",
    ]
    chain = json.loads(cli(runner, instance, "audit", "list", "--action", "subscriber", "--json"))
    assert sum(e["action"] == "subscriber.mode_changed" for e in chain) == 3
    cli(runner, instance, "audit", "verify")  # the chain holds: exit 0


def test_paused_and_weekly_readers_get_no_send_and_the_digest_serves_them_by_date(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSLETTER_TRANSPORT", "smtp")
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(smtp_server.port))
    active = load_sample(runner, instance)
    back = dt.date.today() + dt.timedelta(days=30)
    cli(runner, instance, "subscribers", "edit", PAUSED, "--mode", "paused", "--until",
        back.isoformat())  # fmt: skip
    weekday = back.strftime("%a").upper()  # C locale under test: MON..SUN
    cli(runner, instance, "subscribers", "edit", WEEKLY, "--mode", "weekly", "--weekday", weekday)

    cli(runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-host", "127.0.0.1",
        "--smtp-port", str(smtp_server.port))  # fmt: skip
    got = Counter(r.rcpt for r in smtp_server.handler.received)
    assert got == Counter(active - {PAUSED, WEEKLY})

    # The digest the day before: the pause still holds and it is not the weekly reader's day.
    [digest] = json.loads(cli(runner, instance, "digest", "schedule", "--cron", "0 12 * * *",
                              "--json"))  # fmt: skip
    eve = dt.datetime.combine(back - dt.timedelta(days=1), dt.time(12), dt.UTC)
    day = dt.datetime.combine(back, dt.time(12), dt.UTC)
    with database(instance) as db:
        first = digests.run_digest_once(db, digest["id"], "", now=eve, grace=SIX_HOURS)
        assert first is not None and first.enqueued == 0
        second = digests.run_digest_once(db, digest["id"], "", now=day, grace=SIX_HOURS)
        assert second is not None and second.per_issue == {"2020-01": 2}
        sending.send_campaign_rows(instance.settings, "2020-01", db=db, clock=lambda: day)
    got = Counter(r.rcpt for r in smtp_server.handler.received)
    assert got == Counter(active)  # each of them once, nobody twice


# --- arrival: a newcomer gets the latest issue once, never older ones ---------------------------

NOW = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)


@given(
    sent=st.one_of(st.none(), st.integers(-90, 90)),
    joined=st.integers(-90, 90),
    latest=st.booleans(),
    catch_up=st.integers(0, 60),
)
def test_who_may_receive_an_issue_sent_before_they_joined(
    sent: int | None, joined: int, latest: bool, catch_up: int
) -> None:
    published = None if sent is None else NOW + dt.timedelta(days=sent)
    joined_at = NOW + dt.timedelta(days=joined)
    allowed = may_receive(published, joined_at, latest=latest, now=NOW + dt.timedelta(days=91),
                          catch_up=dt.timedelta(days=catch_up))  # fmt: skip
    if published is None or published >= joined_at:
        assert allowed  # not yet sent, or sent after they joined: theirs like anyone's
    else:
        age = NOW + dt.timedelta(days=91) - published
        assert allowed == (latest and catch_up > 0 and age <= dt.timedelta(days=catch_up))


def test_latest_published_is_the_one_sent_last() -> None:
    assert latest_published({}) is None
    assert latest_published({1: NOW, 2: None, 3: NOW - dt.timedelta(days=1)}) == 1


def _second_issue(tmp_path: Path) -> Path:
    text = SAMPLE.read_text(encoding="utf-8").replace("\nnumber: 1\n", "\nnumber: 2\n", 1)
    target = tmp_path / "2020-02.yaml"
    target.write_text(text, encoding="utf-8")
    return target


def test_a_newcomer_and_a_successor_get_the_latest_issue_once_and_no_older_one(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("NEWSLETTER_TRANSPORT", "smtp")
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(smtp_server.port))
    active = load_sample(runner, instance)
    send = ("--transport", "smtp", "--smtp-host", "127.0.0.1", "--smtp-port",
            str(smtp_server.port))  # fmt: skip
    cli(runner, instance, "send", "2020-01", *send)
    cli(runner, instance, "issue", "import", str(_second_issue(tmp_path)))
    cli(runner, instance, "send", "2020-02", *send)
    assert len(smtp_server.handler.received) == 2 * len(active)

    newcomer = "new.arrival@de-berlin.example.org"
    cli(runner, instance, "subscribers", "add", newcomer, "--embassy", "de-berlin")
    successor = "successor@de-munich-cg.example.org"
    predecessor = next(a for a in sorted(active) if a.endswith("@de-munich-cg.example.org"))
    cli(runner, instance, "subscribers", "handover", predecessor, successor, "--no-mail")
    with database(instance) as db, Session(db) as session:
        store.set_status(session, store.find(session, successor), SubscriberStatus.ACTIVE,
                         actor="subscriber", via="link")  # fmt: skip
        session.commit()
    [digest] = json.loads(cli(runner, instance, "digest", "schedule", "--cron", "0 9 * * *",
                              "--json"))  # fmt: skip
    before = len(smtp_server.handler.received)
    with database(instance) as db:
        # Catch-up off: nothing already sent reaches them.
        off = digests.run_digest_once(db, digest["id"], "", now=utcnow(), grace=SIX_HOURS,
                                      catch_up=dt.timedelta())  # fmt: skip
        assert off is not None and off.enqueued == 0
        run = digests.run_digest_once(db, digest["id"], "", now=utcnow(), grace=SIX_HOURS)
        assert run is not None and run.per_issue == {"2020-02": 2}
        sending.send_campaign_rows(instance.settings, "2020-02", db=db)
        again = digests.run_digest_once(db, digest["id"], "", now=utcnow(), grace=SIX_HOURS)
        assert again is not None and again.enqueued == 0
    arrived = smtp_server.handler.received[before:]
    assert Counter(r.rcpt for r in arrived) == Counter({newcomer: 1, successor: 1})
    assert all("No. 2" in str(r.parsed()["Subject"]) or "第2期" in str(r.parsed()["Subject"])
               for r in arrived)  # fmt: skip


def test_catch_up_days_is_a_documented_setting_that_turns_arrival_off(tmp_path: Path) -> None:
    config = tmp_path / "newsletter.toml"
    text = sample_config(database_url=f"sqlite:///{tmp_path / 'n.db'}")
    assert "catch_up_days = 30" in text
    config.write_text(text.replace("catch_up_days = 30", "catch_up_days = 0"), encoding="utf-8")
    assert load_settings(config).delivery.catch_up_days == 0
    config.write_text(text.replace("catch_up_days = 30", "catch_up_days = -1"), encoding="utf-8")
    with pytest.raises(NewsletterError, match="catch_up_days"):
        load_settings(config)
