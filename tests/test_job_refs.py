"""Upgrading across the move of the scheduler jobs into `newsletter.scheduling`.

APScheduler stores each job's function by module path; a database written before the move names
`newsletter.scheduler`, which no longer exists. Migration 0008 renames those references.
"""

from __future__ import annotations

import json
import pickle

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from typer.testing import CliRunner

from newsletter.db import MIGRATIONS, make_engine
from tests.conftest import Instance, cli

OLD_MODULE = "newsletter.scheduler:"
NEW_MODULE = "newsletter.scheduling.jobs:"


def _jobs(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, job_state FROM apscheduler_jobs")).all()
    return {job_id: pickle.loads(blob)["func"] for job_id, blob in rows}


def _migrations(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _as_the_previous_layout_stored_them(engine: sa.Engine) -> None:
    """The schema and job rows a database written before the move holds: a real downgrade to
    0007 (every later migration undone, 0008 giving the jobs their old module path)."""
    with engine.begin() as connection:
        command.downgrade(_migrations(connection), "0007")


def test_a_digest_scheduled_before_the_move_keeps_its_next_run_after_upgrade(
    runner: CliRunner, instance: Instance
) -> None:
    utc, berlin = (
        json.loads(cli(runner, instance, "digest", "schedule", "--cron", cron, "--json"))
        for cron in ("0 9 * * 1", "30 8 * * MON-FRI")
    )
    scheduled = {row["id"]: row["next_run_utc"] for row in [*utc, *berlin]}
    engine = make_engine(instance.settings.resolved_database_url)
    try:
        _as_the_previous_layout_stored_them(engine)
        assert set(_jobs(engine).values()) == {f"{OLD_MODULE}run_digest"}
        cli(runner, instance, "init")  # brings the database to the latest schema
        listed = json.loads(cli(runner, instance, "digest", "list", "--json"))
        stored = _jobs(engine)
    finally:
        engine.dispose()
    # Listing restores every job: one the store could not restore it would have deleted.
    assert {row["id"]: row["next_run_utc"] for row in listed} == scheduled
    assert None not in scheduled.values()
    assert set(stored) == {"digest-1", "digest-2"}
    assert set(stored.values()) == {f"{NEW_MODULE}run_digest"}


def test_downgrading_past_0008_gives_the_jobs_their_old_module_back(
    runner: CliRunner, instance: Instance
) -> None:
    cli(runner, instance, "digest", "schedule", "--cron", "0 9 * * 1")
    engine = make_engine(instance.settings.resolved_database_url)
    try:
        assert set(_jobs(engine).values()) == {f"{NEW_MODULE}run_digest"}
        with engine.begin() as connection:
            command.downgrade(_migrations(connection), "0007")
        assert set(_jobs(engine).values()) == {f"{OLD_MODULE}run_digest"}
    finally:
        engine.dispose()
