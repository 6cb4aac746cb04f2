"""Real fixtures: SQLite files and PostgreSQL databases, an aiosmtpd server, configured instances."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select
from typer.testing import CliRunner, Result

from newsletter.config import Settings, load_settings, sample_config
from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import make_engine
from newsletter.delivery.engine import SendReport
from newsletter.directory import bundled_data_dir
from newsletter.models import Delivery, Subscriber, utcnow
from newsletter.render.environment import default_templates_dir
from newsletter.services import sending
from newsletter.services.actors import Actor
from newsletter.testing.sink import LoopbackController, RecordingHandler, start_sink

PG_ADMIN = os.environ.get("NEWSLETTER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"no PostgreSQL server at {PG_ADMIN}: {exc}"


@pytest.fixture(scope="session")
def pg_admin() -> str:
    problem = _pg_reachable()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true but {problem}")
        pytest.skip(problem)
    return PG_ADMIN


@pytest.fixture
def pg_url(pg_admin: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"newsletter_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_admin.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'newsletter.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def smtp_server() -> Iterator[LoopbackController]:
    controller = start_sink(RecordingHandler())
    yield controller
    controller.stop()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@dataclass
class Instance:
    dir: Path
    config: Path

    @property
    def settings(self) -> Settings:
        return load_settings(self.config)


def invoke(
    runner: CliRunner, instance: Instance, *args: str, env: dict[str, str] | None = None
) -> Result:
    """`newsletter --config <instance> ARGS...`, as a staff member would type it."""
    from newsletter.cli import app

    return runner.invoke(app, ["--config", str(instance.config), *args], env=env)


def cli(
    runner: CliRunner, instance: Instance, *args: str, env: dict[str, str] | None = None
) -> str:
    """The command's stdout; it must succeed."""
    result = invoke(runner, instance, *args, env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def fails(
    runner: CliRunner, instance: Instance, *args: str, env: dict[str, str] | None = None
) -> str:
    """The command's stderr; it must fail as a staff member's mistake does (exit status 1)."""
    result = invoke(runner, instance, *args, env=env)
    assert result.exit_code == 1, result.output
    return result.stderr


LISTS = bundled_data_dir() / "lists"


def load_sample(runner: CliRunner, instance: Instance) -> set[str]:
    """The sample lists and issue; the addresses of the active subscribers."""
    cli(runner, instance, "subscribers", "import", str(LISTS))
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    rows = json.loads(cli(runner, instance, "subscribers", "list", "--json"))
    return {r["email"] for r in rows if r["status"] == "active"}


@contextmanager
def database(instance: Instance) -> Iterator[Engine]:
    engine = make_engine(instance.settings.resolved_database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def at_in(seconds: float) -> str:
    """An ISO time `seconds` from now, for `schedule --at`."""
    return (utcnow() + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def plans_json(runner: CliRunner, instance: Instance) -> list[dict[str, Any]]:
    return list(json.loads(cli(runner, instance, "schedule", "list", "--json")))


def make_instance(tmp_path: Path, db_url: str) -> Instance:
    """A config file pointing at `db_url`; not yet initialised."""
    config = tmp_path / "newsletter.toml"
    config.write_text(sample_config(database_url=db_url), encoding="utf-8")
    return Instance(tmp_path, config)


@pytest.fixture
def instance(tmp_path: Path, db_url: str, runner: CliRunner) -> Instance:
    """An initialised instance (schema and reference data) on SQLite or PostgreSQL."""
    from newsletter.cli import app

    made = make_instance(tmp_path, db_url)
    result = runner.invoke(app, ["--config", str(made.config), "init"])
    assert result.exit_code == 0, result.output
    return made


def broken_templates(tmp_path: Path) -> Path:
    """A copy of the templates whose digest template cannot compile: every profile fails to
    render, whoever it is for (the issue's fault, not one recipient's)."""
    templates = tmp_path / "templates"
    shutil.copytree(default_templates_dir(), templates)
    (templates / "digest.mjml.j2").write_text("{% if %}", encoding="utf-8")
    return templates


class Clock:
    """A clock the test moves by hand: due times, leases and back-offs without waiting."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def send_sample(
    settings: Settings, *, prepare: bool = True, **options: Unpack[sending.EngineOptions]
) -> SendReport:
    """The sample issue sent as `newsletter send` does (`prepare=False`: the engine alone, as a
    worker runs it on a prepared campaign)."""
    if prepare:
        return sending.send_issue(settings, "2020-01", actor=Actor.cli(), **options)
    return sending.send_campaign_rows(settings, "2020-01", **options)


def ledger_by_email(settings: Settings) -> dict[str, Delivery]:
    """Every ledger row, by its subscriber's address."""
    from newsletter import runtime

    db = runtime.open_database(settings)
    with Session(db) as session:
        pairs = session.exec(
            select(Subscriber.email, Delivery).join(
                Delivery, col(Delivery.subscriber_id) == col(Subscriber.id)
            )
        ).all()
    db.dispose()
    return dict(pairs)


def drop_chain_guards(engine: Engine) -> None:
    """What someone with the database owner's rights can do: remove the append-only triggers."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("DROP TRIGGER admin_event_append_only ON admin_event"))
        else:
            conn.execute(text("DROP TRIGGER admin_event_no_update"))
            conn.execute(text("DROP TRIGGER admin_event_no_delete"))
