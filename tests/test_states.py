"""One owner for every state: the transition tables, `scheduled` campaigns, `skip_reason`."""

from __future__ import annotations

import ast
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select
from typer.testing import CliRunner

import newsletter
from newsletter import states
from newsletter.cli import app
from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import MIGRATIONS, make_engine, upgrade
from newsletter.models import Campaign, Delivery, PlanState, ScheduleDelivery, SchedulePlan, utcnow
from newsletter.scheduling import plans
from newsletter.states import (
    CAMPAIGN_MOVES,
    CampaignState,
    CampaignStateError,
    DeliveryState,
    SkipReason,
    move,
)
from newsletter.subscriptions import lifecycle
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance

PEOPLE = {
    "ok@example.org": "de-berlin",
    "two@example.org": "fr-paris",
    "three@example.org": "jp-tokyo",
}
FAR = "2035-03-01T09:00:00+00:00"
ALL_MOVES = [(a, b) for a in CampaignState for b in CampaignState]


# --- the tables, without a database -------------------------------------------------------


@pytest.mark.parametrize(("start", "to"), [m for m in ALL_MOVES if m[1] in CAMPAIGN_MOVES[m[0]]])
def test_every_allowed_campaign_move_applies(start: CampaignState, to: CampaignState) -> None:
    now = dt.datetime(2030, 1, 7, 9, tzinfo=dt.UTC)
    earlier = now - dt.timedelta(hours=1)
    campaign = Campaign(id=7, issue_id=1, state=start, reason="old reason", finished_at=earlier)
    assert move(campaign, to, reason="why", now=now) == start
    assert (campaign.state, campaign.reason) == (to, "why")
    # Only `finished` carries a finish time; a campaign that goes on has none.
    assert campaign.finished_at == (now if to == CampaignState.FINISHED else None)
    if to == CampaignState.SENDING:
        assert campaign.started_at == now


@pytest.mark.parametrize(
    ("start", "to"), [m for m in ALL_MOVES if m[1] not in CAMPAIGN_MOVES[m[0]]]
)
def test_a_refused_campaign_move_names_the_campaign_its_state_and_what_to_do(
    start: CampaignState, to: CampaignState
) -> None:
    campaign = Campaign(id=7, issue_id=1, state=start, reason="kept")
    with pytest.raises(CampaignStateError) as raised:
        move(campaign, to)
    error = raised.value
    assert (error.campaign_id, error.state) == (7, str(start))
    message = str(error)
    assert message.startswith(f"campaign 7 is {start}; it cannot be ")
    assert "`newsletter " in message and "\n" not in message  # one line naming a command
    assert (campaign.state, campaign.reason) == (start, "kept")  # nothing changed


def test_cancelled_is_final_and_every_state_has_a_row() -> None:
    assert set(CAMPAIGN_MOVES) == set(CampaignState)
    assert CAMPAIGN_MOVES[CampaignState.CANCELLED] == frozenset()
    assert all(s not in CAMPAIGN_MOVES[s] for s in CampaignState)  # no move to where it is


def test_ledger_groups_and_subscriber_table() -> None:
    assert set(states.WAITING) == {DeliveryState.QUEUED, DeliveryState.RETRY}
    assert set(states.HELD) == set(states.WAITING) | {DeliveryState.SENDING}
    assert set(states.LIVE).isdisjoint(states.FINAL)
    assert set(states.LIVE) | set(states.FINAL) == set(DeliveryState)
    assert set(states.SKIP_REPLY) == set(SkipReason)
    # The lifecycle reads the one table; a person's own choice is never turned into a bounce.
    assert lifecycle.ALLOWED is states.ALLOWED and lifecycle.BOUNCEABLE is states.BOUNCEABLE
    assert states.SubscriberStatus.BOUNCED not in states.ALLOWED[states.SubscriberStatus.COMPLAINED]


def test_the_state_module_is_pure() -> None:
    code = "import sys, newsletter.states; print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlmodel', 'sqlalchemy')))"  # noqa: E501
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def _assigns_campaign_state(tree: ast.AST) -> list[int]:
    """Lines that set a campaign's state by hand: `<campaign>.state = ...` or
    `state=CampaignState.X` in a statement (an UPDATE's values)."""
    lines = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = [t for target in node.targets for t in _flatten(target)]
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and target.attr == "state"
                and "campaign" in ast.unparse(target.value).lower()
            ):
                lines.append(target.lineno)
        if isinstance(node, ast.keyword) and node.arg == "state":
            if "CampaignState." in ast.unparse(node.value):
                lines.append(node.value.lineno)
    return lines


def _flatten(target: ast.expr) -> list[ast.expr]:
    if isinstance(target, ast.Tuple | ast.List):
        return [t for e in target.elts for t in _flatten(e)]
    return [target]


def test_only_the_state_module_assigns_a_campaign_state() -> None:
    package = Path(newsletter.__file__).parent
    found = {}
    for path in sorted(package.rglob("*.py")):
        if path.name == "states.py" and path.parent == package:
            continue
        lines = _assigns_campaign_state(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            found[str(path.relative_to(package))] = lines
    assert found == {}


# --- through the command line, on SQLite and PostgreSQL -------------------------------------


def _cli(
    runner: CliRunner, instance: Instance, *args: str, env: dict[str, str] | None = None
) -> str:
    result = runner.invoke(app, ["--config", str(instance.config), *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def _json(runner: CliRunner, instance: Instance, *args: str) -> Any:
    return json.loads(_cli(runner, instance, *args, "--json"))


def _smtp(smtp: LoopbackController) -> dict[str, str]:
    return {
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP__HOST": "127.0.0.1",
        "NEWSLETTER_SMTP__PORT": str(smtp.port),
    }


def _setup(runner: CliRunner, instance: Instance) -> None:
    _cli(runner, instance, "issue", "import", str(sample_issue_path()))
    for email, embassy in PEOPLE.items():
        _cli(runner, instance, "subscribers", "add", email, "--embassy", embassy)


@contextmanager
def _database(instance: Instance) -> Iterator[Engine]:
    engine = make_engine(instance.settings.resolved_database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _make_due(db: Engine, plan_id: int, *, late: dt.timedelta, grace: dt.timedelta) -> None:
    """As if the plan fell due `late` ago: the plan and its rows' windows say so."""
    fire_at = utcnow() - late
    with Session(db) as session:
        session.execute(
            update(SchedulePlan)
            .where(col(SchedulePlan.id) == plan_id)
            .values(fire_at=fire_at, not_after=fire_at + grace)
        )
        linked = select(ScheduleDelivery.delivery_id).where(
            col(ScheduleDelivery.plan_id) == plan_id
        )
        session.execute(
            update(Delivery)
            .where(col(Delivery.id).in_(linked))
            .values(not_before=fire_at, not_after=fire_at + grace)
        )
        session.commit()


def _fire(db: Engine, plan_id: int) -> PlanState | None:
    """What the scheduler's job for the plan does when its time comes."""
    with Session(db, expire_on_commit=False) as session:
        state = plans.fire_plan(session, plan_id, utcnow())
        session.commit()
        return state


def _states(runner: CliRunner, instance: Instance) -> tuple[str, set[str]]:
    """The campaign's state in `campaign list`, and as `schedule list` shows it per plan."""
    [campaign] = _json(runner, instance, "campaign", "list")
    shown = {p["campaign_state"] for p in _json(runner, instance, "schedule", "list")}
    return campaign["state"], shown


def _received(smtp: LoopbackController) -> list[str]:
    return sorted(r.rcpt for r in smtp.handler.received)


def test_a_scheduled_campaign_shows_scheduled_until_its_plan_fires_then_finishes(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    _setup(runner, instance)
    [plan] = _json(runner, instance, "schedule", "2020-01", "--at", FAR)
    assert _states(runner, instance) == ("scheduled", {"scheduled"})

    # A worker finds nothing due; a pause and a resume leave it waiting for its plan.
    _cli(runner, instance, "worker", "--once", env=_smtp(smtp_server))
    assert _received(smtp_server) == []
    _cli(runner, instance, "campaign", "pause", str(plan["campaign"]))
    assert _states(runner, instance) == ("paused", {"paused"})
    _cli(runner, instance, "campaign", "resume", str(plan["campaign"]))
    assert _states(runner, instance) == ("scheduled", {"scheduled"})

    with _database(instance) as db:
        _make_due(db, plan["id"], late=dt.timedelta(minutes=1), grace=dt.timedelta(hours=2))
        assert _fire(db, plan["id"]) == PlanState.FIRED
    assert _states(runner, instance) == ("sending", {"sending"})

    _cli(runner, instance, "worker", "--once", env=_smtp(smtp_server))
    assert _received(smtp_server) == sorted(PEOPLE)
    assert _states(runner, instance) == ("finished", {"finished"})


def test_between_plans_the_campaign_is_scheduled_again(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    """One plan per time zone: after the first zone's rows go, the rest still wait."""
    _setup(runner, instance)
    day = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    rows = _json(runner, instance, "schedule", "2020-01", "--local", "09:00", "--date", day)
    tokyo = next(r for r in rows if r["timezone"] == "Asia/Tokyo")
    assert len(rows) == 3 and _states(runner, instance) == ("scheduled", {"scheduled"})
    with _database(instance) as db:
        _make_due(db, tokyo["id"], late=dt.timedelta(minutes=1), grace=dt.timedelta(hours=2))
        assert _fire(db, tokyo["id"]) == PlanState.FIRED
    assert _states(runner, instance)[0] == "sending"
    _cli(runner, instance, "worker", "--once", env=_smtp(smtp_server))
    assert _received(smtp_server) == ["three@example.org"]
    assert _states(runner, instance) == ("scheduled", {"scheduled"})


def test_a_worker_alone_sends_a_scheduled_campaign_at_its_time(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    """The scheduler was down when the plan fell due: the rows' window is open all the same."""
    _setup(runner, instance)
    [plan] = _json(runner, instance, "schedule", "2020-01", "--at", FAR)
    with _database(instance) as db:
        _make_due(db, plan["id"], late=dt.timedelta(minutes=1), grace=dt.timedelta(hours=2))
    _cli(runner, instance, "worker", "--once", env=_smtp(smtp_server))
    assert _received(smtp_server) == sorted(PEOPLE)
    assert _states(runner, instance)[0] == "finished"


def test_send_takes_back_a_missed_plans_rows_by_skip_reason_not_by_reply_text(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    _setup(runner, instance)
    [plan] = _json(runner, instance, "schedule", "2020-01", "--at", FAR)
    with _database(instance) as db:
        _make_due(db, plan["id"], late=dt.timedelta(hours=3), grace=dt.timedelta(hours=2))
        assert _fire(db, plan["id"]) == PlanState.MISSED
        with Session(db) as session:
            skipped = session.exec(select(Delivery.state, Delivery.skip_reason)).all()
            assert {tuple(r) for r in skipped} == {("skipped", "missed_window")}
            # Someone rewords the message people read; what the code decides on stays.
            session.execute(update(Delivery).values(reply="Sendefenster verpasst"))
            session.commit()
    assert _json(runner, instance, "schedule", "list")[0]["missed"] == len(PEOPLE)
    assert _states(runner, instance)[0] == "ready"
    report = _json(
        runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-port",
        str(smtp_server.port),
    )  # fmt: skip
    assert (report["sent"], report["state"]) == (len(PEOPLE), "finished")
    assert _received(smtp_server) == sorted(PEOPLE)


def test_a_cancelled_campaigns_rows_are_not_taken_back(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    """Staff decided against these rows: a new `send` starts a new campaign, sent once each."""
    _setup(runner, instance)
    [plan] = _json(runner, instance, "schedule", "2020-01", "--at", FAR)
    _cli(runner, instance, "campaign", "cancel", str(plan["campaign"]))
    with _database(instance) as db, Session(db) as session:
        reasons = set(session.exec(select(Delivery.skip_reason)).all())
    assert reasons == {"campaign_cancelled"}
    report = _json(runner, instance, "campaign", "report", str(plan["campaign"]))
    assert {(r["state"], r["skip_reason"]) for r in report["recipients"]} == {
        ("skipped", "campaign_cancelled")
    }
    report = _json(
        runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-port",
        str(smtp_server.port),
    )  # fmt: skip
    assert report["campaign"] != plan["campaign"] and report["sent"] == len(PEOPLE)


# --- migration 0007 -----------------------------------------------------------------------


def _at_revision(engine: Engine, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def test_migration_0007_backfills_skip_reason_from_the_reply(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        _at_revision(engine, "0006")
        meta = sa.MetaData()
        meta.reflect(engine)
        assert "skip_reason" not in meta.tables["delivery"].c
        now = utcnow()
        rows = [
            ("skipped", "missed: send window closed"),
            ("skipped", "schedule cancelled"),
            ("skipped", "campaign cancelled"),
            ("skipped", "subscriber no longer active"),
            ("skipped", "skipped for a reason nobody wrote down"),
            ("sent", "250 2.0.0 Ok: queued"),
            ("queued", ""),
        ]
        with engine.begin() as conn:
            t = meta.tables
            conn.execute(t["embassy"].insert().values(
                code="de-berlin", kind="embassy", name_zh="柏林", name_en="Berlin", country="DE",
                city="Berlin", timezone="Europe/Berlin", working_week="mon-fri", regions=[],
                default_sectors=[],
            ))  # fmt: skip
            conn.execute(t["issue"].insert().values(
                id=1, slug="2020-01", publication="p", title_en="", year=2020, number=1,
                source_yaml="", imported_at=now,
            ))  # fmt: skip
            conn.execute(t["campaign"].insert().values(
                id=1, issue_id=1, state="ready", reason="", created_at=now
            ))  # fmt: skip
            for n, (state, reply) in enumerate(rows, start=1):
                conn.execute(t["subscriber"].insert().values(
                    id=n, email=f"p{n}@example.org", name="", title="", embassy_code="de-berlin",
                    language="zh", status="active", token_key=f"key{n}", consent_source="",
                    created_at=now, status_changed_at=now,
                ))  # fmt: skip
                conn.execute(t["delivery"].insert().values(
                    id=n, campaign_id=1, subscriber_id=n, state=state, attempts=0, profile="",
                    message_id="", reply=reply, updated_at=now, worker="",
                ))  # fmt: skip
        upgrade(engine)
        with engine.connect() as conn:
            got = conn.execute(sa.text("SELECT reply, skip_reason FROM delivery ORDER BY id")).all()
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    assert version is not None and version >= "0007"
    assert [tuple(r) for r in got] == [
        ("missed: send window closed", "missed_window"),
        ("schedule cancelled", "plan_cancelled"),
        ("campaign cancelled", "campaign_cancelled"),
        ("subscriber no longer active", "not_active"),
        ("skipped for a reason nobody wrote down", None),
        ("250 2.0.0 Ok: queued", None),
        ("", None),
    ]
