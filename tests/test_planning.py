"""Scheduling rules with an injected clock: local hours per zone, DST, working weeks, cron days."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.scheduling.rules import (
    Mission,
    ScheduleInputError,
    TimeInPastError,
    When,
    crontab_fields,
    default_day,
    exists_locally,
    grace_seconds,
    local_instant,
    offset_zone_name,
    parse_instant,
    parse_local_time,
    plan_local,
    plan_send,
    working_day,
    zone,
)
from newsletter.taxonomy import WORKING_WEEKS

UTC = dt.UTC
SIX_HOURS = dt.timedelta(hours=6)
ZONES = [
    "Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata",
    "Australia/Lord_Howe", "America/Havana", "Africa/Cairo", "Asia/Tehran", "Pacific/Auckland",
]  # fmt: skip


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone_name", "day", "at", "expected"),
    [
        # Spring forward: 02:30 does not exist; the first valid instant is 03:00 local.
        ("Europe/Berlin", dt.date(2024, 3, 31), dt.time(2, 30), utc(2024, 3, 31, 1, 0)),
        ("America/New_York", dt.date(2024, 3, 10), dt.time(2, 30), utc(2024, 3, 10, 7, 0)),
        ("Australia/Sydney", dt.date(2024, 10, 6), dt.time(2, 30), utc(2024, 10, 5, 16, 0)),
        # Fall back: 02:30 happens twice; the first (summer-time) occurrence is taken.
        ("Europe/Berlin", dt.date(2024, 10, 27), dt.time(2, 30), utc(2024, 10, 27, 0, 30)),
        ("America/New_York", dt.date(2024, 11, 3), dt.time(1, 30), utc(2024, 11, 3, 5, 30)),
        ("Australia/Sydney", dt.date(2024, 4, 7), dt.time(2, 30), utc(2024, 4, 6, 15, 30)),
        # Half-hour zones and half-hour DST shifts.
        ("Asia/Kolkata", dt.date(2024, 3, 31), dt.time(9, 0), utc(2024, 3, 31, 3, 30)),
        ("Australia/Lord_Howe", dt.date(2024, 10, 6), dt.time(2, 15), utc(2024, 10, 5, 15, 30)),
        # The morning hour on either side of each change keeps its local meaning.
        ("Europe/Berlin", dt.date(2024, 3, 29), dt.time(9, 0), utc(2024, 3, 29, 8, 0)),
        ("Europe/Berlin", dt.date(2024, 4, 2), dt.time(9, 0), utc(2024, 4, 2, 7, 0)),
        ("America/New_York", dt.date(2024, 11, 1), dt.time(9, 0), utc(2024, 11, 1, 13, 0)),
        ("America/New_York", dt.date(2024, 11, 4), dt.time(9, 0), utc(2024, 11, 4, 14, 0)),
        ("Australia/Sydney", dt.date(2024, 4, 5), dt.time(9, 0), utc(2024, 4, 4, 22, 0)),
        ("Australia/Sydney", dt.date(2024, 4, 8), dt.time(9, 0), utc(2024, 4, 7, 23, 0)),
    ],
)
def test_local_instant_across_clock_changes(
    zone_name: str, day: dt.date, at: dt.time, expected: dt.datetime
) -> None:
    assert local_instant(day, at, ZoneInfo(zone_name)) == expected


@given(
    zone_name=st.sampled_from(ZONES),
    day=st.dates(dt.date(2020, 1, 1), dt.date(2030, 12, 31)),
    at=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
)
def test_one_instant_at_the_wall_time_or_just_after_the_gap(
    zone_name: str, day: dt.date, at: dt.time
) -> None:
    tz = ZoneInfo(zone_name)
    wall = dt.datetime.combine(day, at)
    instant = local_instant(day, at, tz)
    assert instant.tzinfo is UTC
    seen = instant.astimezone(tz).replace(tzinfo=None)
    if exists_locally(wall, tz):
        assert seen == wall
        # Of two occurrences, the first.
        assert instant == min(wall.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1))
    else:
        # Skipped by the clock: the first valid instant after, one second earlier is before.
        assert seen > wall
        before = (instant - dt.timedelta(seconds=1)).astimezone(tz).replace(tzinfo=None)
        assert before < wall


@given(
    day=st.dates(dt.date(2020, 1, 1), dt.date(2030, 12, 31)),
    week=st.sampled_from(sorted(WORKING_WEEKS)),
)
def test_next_working_day_is_the_first_working_day_on_or_after(day: dt.date, week: str) -> None:
    days = WORKING_WEEKS[week]
    moved = working_day(day, days)
    assert moved.isoweekday() in days
    assert day <= moved < day + dt.timedelta(days=7)
    skipped = [day + dt.timedelta(days=n) for n in range((moved - day).days)]
    assert all(d.isoweekday() not in days for d in skipped)


def test_working_weeks_move_weekends() -> None:
    friday, saturday = dt.date(2024, 5, 3), dt.date(2024, 5, 4)
    assert working_day(friday, WORKING_WEEKS["mon-fri"]) == friday
    assert working_day(friday, WORKING_WEEKS["sun-thu"]) == dt.date(2024, 5, 5)
    assert working_day(saturday, WORKING_WEEKS["mon-fri"]) == dt.date(2024, 5, 6)
    assert working_day(saturday, WORKING_WEEKS["sat-wed"]) == saturday
    assert working_day(dt.date(2024, 5, 2), WORKING_WEEKS["sat-wed"]) == saturday


MISSIONS = [
    Mission("de-berlin", "Europe/Berlin", WORKING_WEEKS["mon-fri"]),
    Mission("de-munich-cg", "Europe/Berlin", WORKING_WEEKS["mon-fri"]),
    Mission("us-washington", "America/New_York", WORKING_WEEKS["mon-fri"]),
    Mission("au-canberra", "Australia/Sydney", WORKING_WEEKS["mon-fri"]),
    Mission("in-newdelhi", "Asia/Kolkata", WORKING_WEEKS["mon-fri"]),
    Mission("eg-cairo", "Africa/Cairo", WORKING_WEEKS["sun-thu"]),
    Mission("ir-tehran", "Asia/Tehran", WORKING_WEEKS["sat-wed"]),
    # Same zone, different working weeks: they may need different dates.
    Mission("ae-abudhabi", "Asia/Dubai", WORKING_WEEKS["mon-fri"]),
    Mission("xx-dubai-sunthu", "Asia/Dubai", WORKING_WEEKS["sun-thu"]),
]


def test_one_slot_per_zone_and_date_each_mission_once() -> None:
    friday = dt.date(2024, 5, 3)
    slots = plan_local(MISSIONS, day=friday, at=dt.time(9), working_days=True, grace=SIX_HOURS)
    placed = [code for s in slots for code in s.missions]
    assert sorted(placed) == sorted(m.code for m in MISSIONS)
    by_code = {code: s for s in slots for code in s.missions}
    assert by_code["de-berlin"] is by_code["de-munich-cg"]
    assert by_code["eg-cairo"].day == dt.date(2024, 5, 5)  # Sunday
    assert by_code["ir-tehran"].day == dt.date(2024, 5, 4)  # Saturday
    assert by_code["ae-abudhabi"].day == friday
    assert by_code["xx-dubai-sunthu"].day == dt.date(2024, 5, 5)
    assert by_code["ae-abudhabi"] is not by_code["xx-dubai-sunthu"]
    for slot in slots:
        local = slot.fire_at.astimezone(zone(slot.timezone))
        assert (local.date(), local.time()) == (slot.day, dt.time(9))
        assert slot.not_after - slot.fire_at == SIX_HOURS
    assert by_code["in-newdelhi"].fire_at == utc(2024, 5, 3, 3, 30)
    assert [s.fire_at for s in slots] == sorted(s.fire_at for s in slots)


missions_st = st.lists(
    st.builds(
        Mission,
        code=st.text("abcdefgh", min_size=1, max_size=4),
        timezone=st.sampled_from(ZONES),
        working_week=st.sampled_from(sorted(WORKING_WEEKS.values())),
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda m: m.code,
)


@given(
    missions=missions_st,
    day=st.dates(dt.date(2020, 1, 1), dt.date(2030, 12, 31)),
    at=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    working_days=st.booleans(),
)
def test_every_mission_gets_exactly_one_send_at_its_local_hour(
    missions: list[Mission], day: dt.date, at: dt.time, working_days: bool
) -> None:
    slots = plan_local(missions, day=day, at=at, working_days=working_days, grace=SIX_HOURS)
    assert sorted(c for s in slots for c in s.missions) == sorted(m.code for m in missions)
    assert len({(s.timezone, s.day) for s in slots}) == len(slots)
    week = {m.code: m.working_week for m in missions}
    for slot in slots:
        assert slot.day is not None
        assert slot.fire_at == local_instant(slot.day, at, zone(slot.timezone))
        for code in slot.missions:
            if working_days:
                assert slot.day == working_day(day, week[code])
            else:
                assert slot.day == day


def test_without_working_days_everyone_gets_the_date() -> None:
    friday = dt.date(2024, 5, 3)
    slots = plan_local(MISSIONS, day=friday, at=dt.time(9), working_days=False, grace=SIX_HOURS)
    assert {s.day for s in slots} == {friday}
    assert len(slots) == len({m.timezone for m in MISSIONS})


@given(st.datetimes(dt.datetime(2020, 1, 1), dt.datetime(2030, 12, 31), timezones=st.just(UTC)))
def test_default_day_is_the_first_date_still_ahead_everywhere(now: dt.datetime) -> None:
    zones = [m.timezone for m in MISSIONS]
    day = default_day(dt.time(9), zones, now)
    assert all(local_instant(day, dt.time(9), zone(z)) > now for z in zones)
    earlier = day - dt.timedelta(days=1)
    assert any(local_instant(earlier, dt.time(9), zone(z)) <= now for z in zones)


def test_plan_send_picks_the_default_date_and_refuses_the_past() -> None:
    now = utc(2024, 5, 3, 2, 0)  # 09:00 has passed in Sydney, not yet in Berlin
    slots = plan_send(MISSIONS, When(local=dt.time(9)), grace=SIX_HOURS, now=now)
    assert {s.day for s in slots} == {dt.date(2024, 5, 4)}
    with pytest.raises(TimeInPastError, match="Australia/Sydney"):
        plan_send(MISSIONS, When(local=dt.time(9), day=dt.date(2024, 5, 3)),
                  grace=SIX_HOURS, now=now)  # fmt: skip


def test_absolute_time_is_one_slot_in_its_own_offset() -> None:
    instant = parse_instant("2024-05-06T09:00+08:00")
    when = When(at=instant, given_in=offset_zone_name(instant))
    [slot] = plan_send(MISSIONS, when, grace=SIX_HOURS, now=utc(2024, 5, 1))
    assert slot.fire_at == utc(2024, 5, 6, 1, 0)
    assert slot.timezone == "UTC+08:00" and slot.local_time == "09:00"
    assert sorted(slot.missions) == sorted(m.code for m in MISSIONS)
    with pytest.raises(TimeInPastError):
        plan_send(MISSIONS, when, grace=SIX_HOURS, now=utc(2024, 5, 7))


@pytest.mark.parametrize("text", ["2024-05-06T09:00", "2024-05-06", "tomorrow"])
def test_absolute_time_needs_an_offset(text: str) -> None:
    with pytest.raises(ScheduleInputError, match="--at"):
        parse_instant(text)


@pytest.mark.parametrize("text", ["9", "24:00", "09:60", "9am", ""])
def test_local_time_must_be_hh_mm(text: str) -> None:
    with pytest.raises(ScheduleInputError, match="HH:MM"):
        parse_local_time(text)


def test_offset_zone_names_round_trip() -> None:
    for text in ("2024-05-06T09:00+05:30", "2024-05-06T09:00-03:00", "2024-05-06T09:00Z"):
        value = parse_instant(text)
        assert value.astimezone(zone(offset_zone_name(value))).utcoffset() == value.utcoffset()
    assert offset_zone_name(parse_instant("2024-05-06T09:00-03:30")) == "UTC-03:30"


@pytest.mark.parametrize(
    ("expr", "days"),
    [
        ("0 9 * * MON", "mon"),
        ("0 9 * * 1", "mon"),  # crontab 1 is Monday (APScheduler 3 would read Tuesday)
        ("0 9 * * 0", "sun"),
        ("0 9 * * 7", "sun"),
        ("0 9 * * 1-5", "mon,tue,wed,thu,fri"),
        ("0 9 * * sun-thu", "sun,mon,tue,wed,thu"),
        ("0 9 * * 5-7", "sun,fri,sat"),
        ("0 9 * * */2", "sun,tue,thu,sat"),
        ("30 8 * * *", "*"),
    ],
)
def test_crontab_weekdays_keep_their_crontab_meaning(expr: str, days: str) -> None:
    assert crontab_fields(expr)["day_of_week"] == days


@pytest.mark.parametrize("expr", ["0 9 * *", "0 9 1 * MON", "0 9 * * fri-mon", "0 9 * * 8"])
def test_bad_crontabs_are_refused(expr: str) -> None:
    with pytest.raises(ScheduleInputError, match="--cron"):
        crontab_fields(expr)


def test_grace_in_whole_seconds_for_apscheduler() -> None:
    assert grace_seconds(dt.timedelta(hours=6)) == 21600
    assert grace_seconds(dt.timedelta(seconds=1.08)) == 2
    assert grace_seconds(dt.timedelta(0)) == 1
