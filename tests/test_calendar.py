"""Host-country holidays and mission closures: pure calendar rules, `schedule --working-days`,
`embassies closure`, and digests that keep to each mission's working days."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from newsletter.directory import bundled_data_dir, host_subdivision, read_reference
from newsletter.models import Delivery, DigestSchedule, Subscriber, utcnow
from newsletter.scheduling import digests
from newsletter.scheduling.calendar import (
    Closure,
    HostCalendar,
    NoWorkingDayError,
    closed_because,
    holiday_name,
    next_open,
)
from newsletter.scheduling.rules import (
    Mission,
    When,
    local_instant,
    plan_local,
    plan_send,
    zone,
)
from newsletter.services import scheduling, sending
from newsletter.services.actors import Actor
from newsletter.services.worker import Worker
from newsletter.taxonomy import WORKING_WEEKS
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance, cli, database, fails, invoke, load_sample

SIX_HOURS = dt.timedelta(hours=6)
NINE = dt.time(9, 0)
STAFF = Actor.staff("li.wei@example.org")
# The directory as planning reads it (closures are added per test).
MISSIONS = {
    e.code: Mission(
        e.code, e.timezone, WORKING_WEEKS[e.working_week], e.country,
        host_subdivision(e.country, e.city),
    )
    for e in read_reference(bundled_data_dir()).embassies
}  # fmt: skip


# --- the rules (pure) -------------------------------------------------------------------------


def test_christmas_2026_moves_berlin_to_monday_and_sun_thu_missions_to_sunday() -> None:
    missions = [MISSIONS[c] for c in ("de-berlin", "il-telaviv", "sa-riyadh", "eg-cairo")]
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    slots = plan_send(
        missions, When(local=NINE, day=dt.date(2026, 12, 25), working_days=True),
        grace=SIX_HOURS, now=now,
    )  # fmt: skip
    by = {s.missions[0]: s for s in slots}
    assert by["de-berlin"].day == dt.date(2026, 12, 28)
    assert by["de-berlin"].why == (
        "2026-12-25 Christmas Day, 2026-12-26 Second Day of Christmas, 2026-12-27 Sunday: "
        "2026-12-28 09:00 Europe/Berlin"
    )
    # Friday and Saturday are their weekend; 25 December is no public holiday there.
    for code, tz in (("il-telaviv", "Asia/Jerusalem"), ("sa-riyadh", "Asia/Riyadh"),
                     ("eg-cairo", "Africa/Cairo")):  # fmt: skip
        assert by[code].day == dt.date(2026, 12, 27)
        assert by[code].why == (f"2026-12-25 Friday, 2026-12-26 Saturday: 2026-12-27 09:00 {tz}")
        assert by[code].fire_at == local_instant(dt.date(2026, 12, 27), NINE, zone(tz))


def test_host_subdivisions_and_the_un_and_eu_keep_their_host_city_calendar() -> None:
    # 6 January (Epiphany) is a holiday in Bavaria, not in Berlin.
    assert holiday_name("DE", "BY", dt.date(2027, 1, 6))
    assert holiday_name("DE", "BE", dt.date(2027, 1, 6)) is None
    assert MISSIONS["de-munich-cg"].subdivision == "BY"
    # The UN in Geneva keeps the canton's Genevan Fast (a Thursday in September); Bern not.
    assert MISSIONS["un-geneva"].calendar.country == "CH"
    assert closed_because(MISSIONS["un-geneva"].calendar, dt.date(2024, 9, 5)) == "Genevan Fast"
    assert closed_because(MISSIONS["ch-bern"].calendar, dt.date(2024, 9, 5)) is None
    # The EU mission keeps Belgium's holidays; the UN in New York keeps New York State's.
    assert closed_because(MISSIONS["eu-brussels"].calendar, dt.date(2026, 7, 21))  # National Day
    assert MISSIONS["un-newyork"].calendar.subdivision == "NY"


def test_every_listed_subdivision_is_one_the_holidays_package_knows() -> None:
    import holidays

    known = holidays.list_supported_countries()
    for mission in MISSIONS.values():
        assert mission.country in known, mission.code
        if mission.subdivision:
            assert mission.subdivision in known[mission.country], mission.code


def test_a_closure_moves_a_send_and_says_why() -> None:
    berlin = MISSIONS["de-berlin"]
    closed = Mission(
        berlin.code, berlin.timezone, berlin.working_week, berlin.country, berlin.subdivision,
        (Closure(dt.date(2027, 3, 1), dt.date(2027, 3, 2), "move to new chancery"),),
    )  # fmt: skip
    [slot] = plan_local([closed], day=dt.date(2027, 3, 1), at=NINE, working_days=True,
                        grace=SIX_HOURS)  # fmt: skip
    assert slot.day == dt.date(2027, 3, 3)
    assert slot.why == (
        "2027-03-01 closed (move to new chancery), 2027-03-02 closed (move to new chancery): "
        "2027-03-03 09:00 Europe/Berlin"
    )
    # Without --working-days the date stands as asked.
    [plain] = plan_local([closed], day=dt.date(2027, 3, 1), at=NINE, working_days=False,
                         grace=SIX_HOURS)  # fmt: skip
    assert (plain.day, plain.why) == (dt.date(2027, 3, 1), "")


def test_missions_of_one_zone_on_different_calendars_get_separate_sends() -> None:
    # Epiphany 2027 is a Wednesday: Munich (Bavaria) moves to Thursday, Berlin does not.
    slots = plan_local(
        [MISSIONS["de-berlin"], MISSIONS["de-munich-cg"]], day=dt.date(2027, 1, 6), at=NINE,
        working_days=True, grace=SIX_HOURS,
    )  # fmt: skip
    assert [(s.missions, s.day, bool(s.why)) for s in slots] == [
        (("de-berlin",), dt.date(2027, 1, 6), False),
        (("de-munich-cg",), dt.date(2027, 1, 7), True),
    ]


def test_a_mission_closed_for_ever_is_a_clear_error() -> None:
    forever = HostCalendar(
        "de-berlin", "DE", "BE", WORKING_WEEKS["mon-fri"],
        (Closure(dt.date(2027, 1, 1), dt.date(2028, 12, 31), "typo"),),
    )  # fmt: skip
    with pytest.raises(NoWorkingDayError, match="embassies closure list de-berlin"):
        next_open(forever, dt.date(2027, 1, 1))


closures = st.lists(
    st.builds(
        lambda first, days, why: Closure(first, first + dt.timedelta(days=days), why),
        st.dates(dt.date(2020, 1, 1), dt.date(2040, 12, 31)),
        st.integers(0, 20),
        st.sampled_from(["", "retreat", "move"]),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(
    code=st.sampled_from(sorted(MISSIONS)),
    day=st.dates(dt.date(2020, 1, 1), dt.date(2040, 12, 31)),
    closed=closures,
    at=st.sampled_from([dt.time(0, 30), dt.time(2, 30), NINE, dt.time(23, 45)]),
)
def test_a_plan_never_lands_on_a_holiday_a_closure_or_a_weekend(
    code: str, day: dt.date, closed: list[Closure], at: dt.time
) -> None:
    base = MISSIONS[code]
    mission = Mission(base.code, base.timezone, base.working_week, base.country,
                      base.subdivision, tuple(closed))  # fmt: skip
    [slot] = plan_local([mission], day=day, at=at, working_days=True, grace=SIX_HOURS)
    assert slot.day is not None and slot.day >= day
    assert holiday_name(mission.country, mission.subdivision, slot.day) is None
    assert not any(c.covers(slot.day) for c in closed)
    assert slot.day.isoweekday() in mission.working_week
    # The first such day: every day skipped has its reason, and the reason is shown.
    move = next_open(mission.calendar, day)
    assert move.day == slot.day
    assert [d for d, _ in move.skipped] == [
        day + dt.timedelta(days=i) for i in range((slot.day - day).days)
    ]
    assert all(closed_because(mission.calendar, d) == why for d, why in move.skipped)
    assert (slot.why != "") == move.moved
    # Moving is idempotent: the day it lands on moves nowhere.
    again = next_open(mission.calendar, slot.day)
    assert (again.day, again.moved) == (slot.day, False)
    # The local hour holds on the moved date, whatever the clock does there.
    local = slot.fire_at.astimezone(zone(mission.timezone))
    assert local.date() == slot.day
    assert slot.fire_at == local_instant(slot.day, at, zone(mission.timezone))


@pytest.mark.parametrize(
    ("code", "day", "lands", "utc_hour"),
    [
        # Berlin: Easter Monday 2026 (6 April) after the spring change; 09:00 is 07:00 UTC.
        ("de-berlin", dt.date(2026, 4, 5), dt.date(2026, 4, 7), (7, 0)),
        # New York: clocks change Sunday 8 March 2026; Monday 09:00 EDT is 13:00 UTC.
        ("us-newyork-cg", dt.date(2026, 3, 8), dt.date(2026, 3, 9), (13, 0)),
        # Sydney: DST begins 4 October 2026, Monday 5 October is Labour Day in NSW.
        ("au-sydney-cg", dt.date(2026, 10, 4), dt.date(2026, 10, 6), (22, 0)),
        # Kolkata, a half-hour zone: Republic Day (Tuesday 26 January 2027); 09:00 is 03:30 UTC.
        ("in-newdelhi", dt.date(2027, 1, 26), dt.date(2027, 1, 27), (3, 30)),
    ],
)
def test_dst_and_half_hour_zones_keep_the_local_hour_on_the_moved_day(
    code: str, day: dt.date, lands: dt.date, utc_hour: tuple[int, int]
) -> None:
    [slot] = plan_local([MISSIONS[code]], day=day, at=NINE, working_days=True, grace=SIX_HOURS)
    assert slot.day == lands and slot.why
    assert (slot.fire_at.hour, slot.fire_at.minute) == utc_hour
    assert slot.fire_at.astimezone(zone(MISSIONS[code].timezone)).time() == NINE


# --- through the CLI and the services, on a real instance --------------------------------------


def next_christmas() -> dt.date:
    """25 December at least two weeks ahead (today's if there is time, else next year's)."""
    today = dt.date.today()
    year = (
        today.year
        if dt.date(today.year, 12, 25) - today >= dt.timedelta(days=14)
        else (today.year + 1)
    )
    return dt.date(year, 12, 25)


def berlin_after_christmas(christmas: dt.date) -> dt.date:
    """Written out from the rule, not the code: not 25 or 26 December, not a weekend."""
    day = christmas + dt.timedelta(days=2)
    while day.isoweekday() > 5:
        day += dt.timedelta(days=1)
    return day


def test_schedule_working_days_dry_run_then_list_show_the_moved_date_and_why(
    runner: CliRunner, instance: Instance
) -> None:
    load_sample(runner, instance)
    christmas = next_christmas()
    args = ("schedule", "2020-01", "--local", "09:00", "--date", christmas.isoformat(),
            "--working-days")  # fmt: skip
    preview = json.loads(cli(runner, instance, *args, "--dry-run", "--json"))
    berlin = next(p for p in preview if "de-berlin" in p["missions"])
    lands = berlin_after_christmas(christmas)
    assert dt.datetime.fromisoformat(berlin["next_run_local"]).date() == lands
    assert berlin["moved"].startswith(f"{christmas.isoformat()} Christmas Day, ")
    assert berlin["moved"].endswith(f": {lands.isoformat()} 09:00 Europe/Berlin")
    # The same instant in Beijing, where staff plan from.
    beijing = dt.datetime.fromisoformat(berlin["next_run_beijing"])
    assert beijing == dt.datetime.fromisoformat(berlin["next_run_utc"])
    assert beijing.utcoffset() == dt.timedelta(hours=8)
    telaviv = next(p for p in preview if "il-telaviv" in p["missions"])
    local = dt.datetime.fromisoformat(telaviv["next_run_local"])
    assert local.isoweekday() in WORKING_WEEKS["sun-thu"] and local.time() == NINE
    # A dry run stores nothing: no plan, and the real run plans exactly what it showed.
    assert json.loads(cli(runner, instance, "schedule", "list", "--json")) == []
    table = invoke(runner, instance, *args, "--dry-run")
    assert table.exit_code == 0 and "nothing was scheduled" in table.stderr
    assert "Christmas Day" in table.stdout

    cli(runner, instance, *args)
    listed = json.loads(cli(runner, instance, "schedule", "list", "--json"))
    keys = ("timezone", "next_run_local", "next_run_beijing", "moved")
    shown = {tuple(p[k] for k in keys) for p in listed}
    assert shown == {tuple(p[k] for k in keys) for p in preview}
    assert sum(p["recipients"] for p in listed) == sum(p["recipients"] for p in preview)
    assert "Christmas" in cli(runner, instance, "schedule", "list")


def test_the_done_when_date_with_an_injected_clock(instance: Instance, runner: CliRunner) -> None:
    load_sample(runner, instance)
    when = scheduling.when(instance.settings, local="09:00", date="2026-12-25", working_days=True)
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    made = scheduling.schedule_issue(instance.settings, "2020-01", when, actor=STAFF, now=now)
    by_zone = {p.timezone: p for p in made.plans}
    berlin = by_zone["Europe/Berlin"]
    assert berlin.next_run_local.date() == dt.date(2026, 12, 28)
    assert berlin.moved == (
        "2026-12-25 Christmas Day, 2026-12-26 Second Day of Christmas, 2026-12-27 Sunday: "
        "2026-12-28 09:00 Europe/Berlin"
    )
    for tz in ("Asia/Jerusalem", "Asia/Riyadh", "Africa/Cairo"):
        assert by_zone[tz].next_run_local.date() == dt.date(2026, 12, 27), tz
        assert by_zone[tz].moved.endswith(f"2026-12-27 09:00 {tz}")
    # Tokyo works on 25 December: not moved, no reason.
    assert by_zone["Asia/Tokyo"].next_run_local.date() == dt.date(2026, 12, 25)
    assert by_zone["Asia/Tokyo"].moved == ""


def test_closures_are_added_listed_removed_and_audited(
    runner: CliRunner, instance: Instance
) -> None:
    out = invoke(runner, instance, "embassies", "closure", "add", "de-berlin", "2027-03-01",
                 "--to", "2027-03-02", "--reason", "move to new chancery")  # fmt: skip
    assert out.exit_code == 0 and "de-berlin closed 2027-03-01 to 2027-03-02" in out.stderr
    one = json.loads(cli(runner, instance, "embassies", "closure", "add", "fr-paris",
                         "2027-05-10", "--json"))  # fmt: skip
    assert (one["first"], one["last"], one["reason"]) == ("2027-05-10", "2027-05-10", "")
    rows = json.loads(cli(runner, instance, "embassies", "closure", "list", "--json"))
    assert [(r["mission"], r["first"], r["last"]) for r in rows] == [
        ("de-berlin", "2027-03-01", "2027-03-02"), ("fr-paris", "2027-05-10", "2027-05-10"),
    ]  # fmt: skip
    only = json.loads(cli(runner, instance, "embassies", "closure", "list", "fr-paris", "--json"))
    assert [r["id"] for r in only] == [one["id"]]
    assert "move to new chancery" in cli(runner, instance, "embassies", "closure", "list")

    # Mistakes name what to fix, and store nothing.
    assert "not found" in fails(runner, instance, "embassies", "closure", "add", "xx-nowhere",
                                "2027-01-04")  # fmt: skip
    assert "YYYY-MM-DD" in fails(runner, instance, "embassies", "closure", "add", "de-berlin",
                                 "4 Jan")  # fmt: skip
    assert "before" in fails(runner, instance, "embassies", "closure", "add", "de-berlin",
                             "2027-01-04", "--to", "2027-01-01")  # fmt: skip
    overlap = fails(runner, instance, "embassies", "closure", "add", "de-berlin", "2027-03-02")
    assert f"closure remove {rows[0]['id']}" in overlap
    assert "not found" in fails(runner, instance, "embassies", "closure", "remove", "999")
    assert len(json.loads(cli(runner, instance, "embassies", "closure", "list", "--json"))) == 2

    removed = invoke(runner, instance, "embassies", "closure", "remove", str(one["id"]))
    assert removed.exit_code == 0 and "removed" in removed.stderr
    assert len(json.loads(cli(runner, instance, "embassies", "closure", "list", "--json"))) == 1
    events = json.loads(cli(runner, instance, "audit", "list", "--action", "mission", "--json"))
    events.reverse()  # newest first
    assert [e["action"] for e in events] == [
        "mission.closure_added", "mission.closure_added", "mission.closure_removed",
    ]  # fmt: skip
    assert [e["mission"] for e in events] == ["de-berlin", "fr-paris", "fr-paris"]
    assert events[0]["target"] == f"closure:{rows[0]['id']}"
    assert events[0]["detail"] == {"first": "2027-03-01", "last": "2027-03-02"}
    assert str(events[0]["actor"]).startswith("cli:") and events[0]["via"] == "cli"
    cli(runner, instance, "audit", "verify")  # the chain holds: exit 0


def test_a_closure_moves_the_missions_planned_send(runner: CliRunner, instance: Instance) -> None:
    load_sample(runner, instance)
    christmas = next_christmas()
    # Tokyo works on Christmas Day; a closure of its own moves it, Osaka stays.
    cli(runner, instance, "embassies", "closure", "add", "jp-tokyo", christmas.isoformat(),
        "--reason", "staff retreat")  # fmt: skip
    preview = json.loads(cli(runner, instance, "schedule", "2020-01", "--local", "09:00",
                             "--date", christmas.isoformat(), "--working-days", "--dry-run",
                             "--json"))  # fmt: skip
    tokyo = next(p for p in preview if "jp-tokyo" in p["missions"])
    osaka = next(p for p in preview if "jp-osaka-cg" in p["missions"])
    assert f"{christmas.isoformat()} closed (staff retreat)" in tokyo["moved"]
    assert dt.datetime.fromisoformat(osaka["next_run_local"]).date() == christmas
    assert dt.datetime.fromisoformat(tokyo["next_run_local"]).date() > christmas


def test_a_working_days_digest_waits_for_the_missions_next_working_morning(
    runner: CliRunner, instance: Instance
) -> None:
    load_sample(runner, instance)
    out = invoke(runner, instance, "digest", "schedule", "--cron", "0 9 * * *", "--local",
                 "--working-days")  # fmt: skip
    assert out.exit_code == 0 and "working days" in out.stderr
    listed = json.loads(cli(runner, instance, "digest", "list", "--json"))
    assert listed and all(j["working_days"] for j in listed)
    assert "working" in cli(runner, instance, "digest", "list")
    # The Berlin job's run at 09:00 on Christmas Day 2026 (a Friday), with an injected clock.
    run_at = local_instant(dt.date(2026, 12, 25), NINE, zone("Europe/Berlin"))
    with database(instance) as db:
        digest_id = listed[0]["id"]
        outcome = digests.run_digest_once(db, digest_id, "Europe/Berlin", now=run_at,
                                          grace=SIX_HOURS)  # fmt: skip
        assert outcome is not None and outcome.enqueued > 0
        assert outcome.deferred == outcome.enqueued
        monday = local_instant(dt.date(2026, 12, 28), NINE, zone("Europe/Berlin"))
        windows = _windows(db)
    assert {windows[e] for e in windows if "@de-berlin." in e} == {(monday, monday + SIX_HOURS)}
    assert {windows[e] for e in windows if "@de-munich-cg." in e} == {(monday, monday + SIX_HOURS)}


def test_a_digest_without_working_days_sends_on_the_holiday(
    runner: CliRunner, instance: Instance
) -> None:
    load_sample(runner, instance)
    cli(runner, instance, "digest", "schedule", "--cron", "0 9 * * *", "--local")
    run_at = local_instant(dt.date(2026, 12, 25), NINE, zone("Europe/Berlin"))
    with database(instance) as db:
        [digest_id] = _digest_ids(db)
        outcome = digests.run_digest_once(db, digest_id, "Europe/Berlin", now=run_at,
                                          grace=SIX_HOURS)  # fmt: skip
        assert outcome is not None and outcome.enqueued > 0 and outcome.deferred == 0
        assert set(_windows(db).values()) == {(run_at, run_at + SIX_HOURS)}


def _digest_ids(db: Engine) -> list[int]:
    with Session(db) as session:
        return [int(i) for i in session.exec(select(DigestSchedule.id)) if i is not None]


def _windows(db: Engine) -> dict[str, tuple[dt.datetime | None, dt.datetime | None]]:
    with Session(db) as session:
        rows = session.exec(
            select(Subscriber.email, Delivery.not_before, Delivery.not_after).join(
                Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id)
            )
        ).all()
    return {email: (start, end) for email, start, end in rows}


def test_a_closed_missions_digest_rows_wait_while_the_worker_sends_the_rest(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSLETTER_TRANSPORT", "smtp")
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(smtp_server.port))
    active = load_sample(runner, instance)
    now = utcnow()
    today_in_berlin = now.astimezone(zone("Europe/Berlin")).date()
    for code in ("de-berlin", "de-munich-cg"):
        cli(runner, instance, "embassies", "closure", "add", code, today_in_berlin.isoformat(),
            "--reason", "test")  # fmt: skip
    cli(runner, instance, "digest", "schedule", "--cron", "0 9 * * *", "--working-days")
    # Who is closed today: the two closed missions, and any whose weekend or holiday it is
    # (the test runs on real days).
    shut = {"de-berlin", "de-munich-cg"} | {
        m.code for m in MISSIONS.values()
        if closed_because(m.calendar, now.astimezone(zone(m.timezone)).date())
    }  # fmt: skip
    listed = json.loads(cli(runner, instance, "subscribers", "list", "--json"))
    waiting = {r["email"] for r in listed if r["email"] in active and r["embassy"] in shut}
    with database(instance) as db:
        [digest_id] = _digest_ids(db)
        outcome = digests.run_digest_once(db, digest_id, "", now=now, grace=SIX_HOURS)
        assert outcome is not None and outcome.deferred == len(waiting)

        async def rounds() -> None:
            worker = Worker(instance.settings, db)
            while await worker.round():
                pass

        asyncio.run(rounds())
        got = Counter(r.rcpt for r in smtp_server.handler.received)
        assert got == Counter(active - waiting)
        status = json.loads(cli(runner, instance, "campaign", "list", "--json"))
        assert [c["state"] for c in status] == ["scheduled"]  # the rest waits for its morning
        windows = _windows(db)
        berlin = {windows[e][0] for e in waiting if "@de-berlin." in e}
        assert len(berlin) == 1
        [when] = berlin
        assert when is not None and when > now
        day = when.astimezone(zone("Europe/Berlin")).date()
        assert day > today_in_berlin and not closed_because(MISSIONS["de-berlin"].calendar, day)
        # Each closed mission's rows fall due at its own next working morning: sent, once.
        openings = sorted({w for e in waiting if (w := windows[e][0]) is not None})
        for opening in openings:
            sending.send_campaign_rows(instance.settings, "2020-01", db=db,
                                       clock=functools.partial(_at, opening))  # fmt: skip
    assert Counter(r.rcpt for r in smtp_server.handler.received) == Counter(active)


def _at(moment: dt.datetime) -> dt.datetime:
    return moment
