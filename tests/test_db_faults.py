"""Database faults under a running sender: terminated PostgreSQL backends, a locked SQLite file,
an unreachable server, and a campaign that cannot be sent before a healthy one."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select, update
from typer.testing import CliRunner

from newsletter import runtime
from newsletter.cli import app
from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import database_problem, make_engine
from newsletter.delivery.campaigns import prepare_send
from newsletter.issues import get_issue
from newsletter.models import Campaign, CampaignState, DeliveryState, IssueRecord
from newsletter.testing.sink import LoopbackController, RecordingHandler, start_sink
from tests.conftest import Instance, cli, ledger_by_email, make_instance

NEWSLETTER = Path(sys.executable).parent / "newsletter"
TIMEOUT = 90.0
HEALTHY = "2020-01-b"


def wait_for(check: Callable[[], bool], what: Callable[[], str], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what()}")
        time.sleep(0.05)


def initialised(runner: CliRunner, tmp_path: Path, db_url: str = "") -> Instance:
    """An instance with its schema, on `db_url` or else on a SQLite file of its own: the faults
    here are SQLite's file locks or a PostgreSQL server's, not both."""
    instance = make_instance(tmp_path, db_url or f"sqlite:///{tmp_path / 'newsletter.db'}")
    cli(runner, instance, "init")
    return instance


def load(runner: CliRunner, instance: Instance, people: list[str], *, second: bool = False) -> None:
    """The sample issue (and with `second` a copy of it as HEALTHY) and `people`, all active."""
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    if second:
        copy = instance.dir / f"{HEALTHY}.yaml"
        text = sample_issue_path().read_text(encoding="utf-8")
        copy.write_text(f"slug: {HEALTHY}\n{text}", encoding="utf-8")
        cli(runner, instance, "issue", "import", str(copy))
    lists = instance.dir / "lists"
    lists.mkdir()
    (lists / "de-berlin.csv").write_text(
        "email,name,title,sectors,language\n" + "".join(f"{p},,,,zh\n" for p in people),
        encoding="utf-8",
    )
    cli(runner, instance, "subscribers", "import", str(lists))


def queue(instance: Instance, *slugs: str) -> list[int]:
    """A sending campaign for each issue, in this order (so with ascending ids)."""
    db = runtime.open_database(instance.settings)
    ids = []
    try:
        with Session(db, expire_on_commit=False) as session:
            for slug in slugs:
                campaign, _ = prepare_send(session, get_issue(session, slug).record)
                assert campaign.id is not None
                ids.append(campaign.id)
            session.commit()
    finally:
        db.dispose()
    return ids


def break_issue(instance: Instance, slug: str) -> None:
    """Store a source that no longer parses, as a hand-edited database would hold."""
    db = runtime.open_database(instance.settings)
    try:
        with Session(db) as session:
            session.execute(
                update(IssueRecord)
                .where(col(IssueRecord.slug) == slug)
                .values(source_yaml="items: [unclosed\n  - {")
            )
            session.commit()
    finally:
        db.dispose()


def campaign(instance: Instance, campaign_id: int) -> Campaign:
    db = runtime.open_database(instance.settings)
    try:
        with Session(db) as session:
            found = session.exec(select(Campaign).where(col(Campaign.id) == campaign_id)).one()
            session.expunge(found)
            return found
    finally:
        db.dispose()


def received(server: LoopbackController) -> Counter[str]:
    return Counter(r.rcpt for r in server.handler.received)


def assert_one_line_events(stderr: str) -> None:
    """No traceback, no driver text continued on further lines: one event, one line."""
    assert "Traceback" not in stderr, stderr
    continued = [line for line in stderr.splitlines() if line[:1].isspace()]
    assert not continued, stderr


class Process:
    """A `newsletter` subprocess whose stderr goes to a file the test reads as it grows."""

    def __init__(self, instance: Instance, env: dict[str, str], *args: str) -> None:
        self.log = instance.dir / f"{args[0]}.stderr"
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [str(NEWSLETTER), "--config", str(instance.config), *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
            )  # fmt: skip

    @property
    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def says(self, text: str) -> None:
        wait_for(lambda: text in self.stderr, lambda: f"{text!r} in\n{self.stderr}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(TIMEOUT)

    def wait(self) -> int:
        return self.process.wait(TIMEOUT)

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(TIMEOUT)


@pytest.fixture
def processes() -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(instance: Instance, env: dict[str, str], *args: str) -> Process:
        started.append(Process(instance, env, *args))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def sender_env(server: LoopbackController, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP__HOST": "127.0.0.1",
        "NEWSLETTER_SMTP__PORT": str(server.port),
        "NEWSLETTER_DELIVERY__POLL_SECONDS": "0.2",
        **extra,
    }


@contextmanager
def exclusive(database: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding SQLite's write lock until the block ends."""
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        yield holder
        holder.execute("ROLLBACK")
    finally:
        holder.close()


def sqlite_file(instance: Instance) -> Path:
    url = instance.settings.resolved_database_url
    return Path(url.removeprefix("sqlite:///"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.postgres
def test_worker_survives_terminated_postgres_backends_and_sends_everyone_once(
    runner: CliRunner, tmp_path: Path, pg_url: str, processes: Callable[..., Process]
) -> None:
    instance = initialised(runner, tmp_path, pg_url)
    people = [f"t{i:03d}@example.org" for i in range(300)]
    load(runner, instance, people)
    [campaign_id] = queue(instance, "2020-01")

    server = start_sink(RecordingHandler(data_delay=0.02))
    # A short lease: rows a terminated engine had claimed come back within seconds.
    env = sender_env(
        server, NEWSLETTER_DELIVERY__BATCH_SIZE="20", NEWSLETTER_DELIVERY__LEASE_SECONDS="3"
    )
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    kill = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    try:
        worker = processes(instance, env, "worker")
        terminated = 0
        with psycopg.connect(plain, autocommit=True) as admin:

            def states() -> Counter[str]:
                rows = admin.execute(
                    "SELECT state, count(*) FROM delivery WHERE campaign_id = %s GROUP BY state",
                    (campaign_id,),
                ).fetchall()
                return Counter({str(state): int(n) for state, n in rows})

            # Every 50 messages the sink takes, a burst of terminations for 0.3 s: whatever the
            # worker does then (claim, ledger write, read, reconnect) meets a dead connection.
            mark, bursts = 0, 0
            deadline = time.monotonic() + TIMEOUT
            while states()[DeliveryState.SENT] < len(people):
                assert worker.alive(), worker.stderr
                assert time.monotonic() < deadline, f"{states()}\n{worker.stderr}"
                now = sum(received(server).values())
                if bursts < 5 and now >= mark + 50:
                    burst_end = time.monotonic() + 0.3
                    while time.monotonic() < burst_end:
                        hit = admin.execute(kill).fetchone()
                        terminated += hit[0] if hit else 0
                        time.sleep(0.01)
                    bursts, mark = bursts + 1, now
                time.sleep(0.05)
        assert worker.terminate() == 0, worker.stderr
    finally:
        server.stop()

    assert terminated >= 5, worker.stderr
    counts = received(server)
    assert set(counts) == set(people) and max(counts.values()) == 1  # everyone, nobody twice
    rows = ledger_by_email(instance.settings)
    assert {r.state for r in rows.values()} == {DeliveryState.SENT}
    # The faults reached the worker (its loop or the engine's own retry said so, one line each).
    assert "administrator command" in worker.stderr or "server closed" in worker.stderr
    assert_one_line_events(worker.stderr)


def test_worker_waits_out_a_locked_sqlite_database(
    runner: CliRunner, tmp_path: Path, processes: Callable[..., Process]
) -> None:
    instance = initialised(runner, tmp_path)
    people = [f"l{i:03d}@example.org" for i in range(40)]
    load(runner, instance, people)
    queue(instance, "2020-01")
    database = sqlite_file(instance)

    server = start_sink()
    # A short busy timeout, so "database is locked" comes in half a second, not ten.
    env = sender_env(server, NEWSLETTER_DATABASE_URL=f"sqlite:///{database}?timeout=0.5")
    try:
        with exclusive(database):
            worker = processes(instance, env, "worker", "--once")
            worker.says("database is locked; retrying in")
            assert worker.alive() and not server.handler.received
        assert worker.wait() == 0, worker.stderr
    finally:
        server.stop()
    assert received(server) == Counter(people)
    assert {r.state for r in ledger_by_email(instance.settings).values()} == {DeliveryState.SENT}
    assert f"SQLite database {database} unavailable: database is locked" in worker.stderr
    assert_one_line_events(worker.stderr)


def test_a_broken_campaign_does_not_stop_worker_once_from_sending_the_next(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    people = [f"b{i:02d}@example.org" for i in range(30)]
    load(runner, instance, people, second=True)
    broken, healthy = queue(instance, "2020-01", HEALTHY)
    break_issue(instance, "2020-01")

    env = {"NEWSLETTER_TRANSPORT": "smtp", "NEWSLETTER_SMTP__PORT": str(smtp_server.port)}
    result = runner.invoke(app, ["--config", str(instance.config), "worker", "--once"], env=env)
    assert result.exit_code == 0, result.output
    assert received(smtp_server) == Counter(people)  # the healthy campaign, everyone once
    stopped = campaign(instance, broken)
    assert stopped.state == CampaignState.PAUSED and stopped.reason, stopped
    assert "\n" not in stopped.reason
    assert campaign(instance, healthy).state == CampaignState.FINISHED
    assert f"campaign {broken} (2020-01): paused" in result.stderr
    assert_one_line_events(result.stderr)


def test_run_waits_out_a_locked_database_sets_a_broken_campaign_aside_and_keeps_serving(
    runner: CliRunner, tmp_path: Path, processes: Callable[..., Process]
) -> None:
    instance = initialised(runner, tmp_path)
    people = [f"r{i:02d}@example.org" for i in range(30)]
    load(runner, instance, people, second=True)
    broken, healthy = queue(instance, "2020-01", HEALTHY)
    break_issue(instance, "2020-01")
    database = sqlite_file(instance)

    server = start_sink()
    port = free_port()
    env = sender_env(
        server,
        NEWSLETTER_DATABASE_URL=f"sqlite:///{database}?timeout=0.5",
        NEWSLETTER_SCHEDULE__POLL_SECONDS="0.2",
        NEWSLETTER_SCHEDULE__LOCK_RETRY_SECONDS="0.3",
        # A public archive: the page reads the database without a reader's token.
        NEWSLETTER_ARCHIVE__VISIBILITY="public",
    )

    def archive() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/archive", timeout=5) as answer:
            return int(answer.status)

    try:
        with exclusive(database):
            daemon = processes(instance, env, "run", "--web", "--port", str(port))
            daemon.says("database is locked; retrying in")
            assert daemon.alive()
            assert archive() == 200  # readers go on while the sender waits
        wait_for(
            lambda: sum(received(server).values()) >= len(people),
            lambda: f"the healthy campaign sent\n{daemon.stderr}",
        )
        daemon.says(f"campaign {broken} (2020-01): paused")
        assert daemon.alive() and archive() == 200
        assert daemon.terminate() == 0, daemon.stderr
    finally:
        server.stop()
    assert received(server) == Counter(people)
    assert campaign(instance, broken).state == CampaignState.PAUSED
    assert campaign(instance, healthy).state == CampaignState.FINISHED
    assert_one_line_events(daemon.stderr)


def test_an_unreachable_database_is_one_line_naming_it_without_the_password(
    runner: CliRunner, tmp_path: Path
) -> None:
    instance = make_instance(tmp_path, f"sqlite:///{tmp_path / 'newsletter.db'}")
    url = f"postgresql+psycopg://mailer:s3cret@127.0.0.1:{free_port()}/newsletter"
    for command in (["worker", "--once"], ["worker"], ["run"], ["send", "2020-01"]):
        result = runner.invoke(
            app, ["--config", str(instance.config), *command], env={"NEWSLETTER_DATABASE_URL": url}
        )
        assert result.exit_code == 1, (command, result.output)
        assert isinstance(result.exception, SystemExit), (command, result.exception)
        [line] = result.stderr.splitlines()
        assert line.startswith("error: PostgreSQL database newsletter at mailer@127.0.0.1:")
        assert "unavailable" in line and "s3cret" not in line and "newsletter init" not in line


def test_send_on_a_locked_sqlite_database_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    instance = initialised(runner, tmp_path)
    load(runner, instance, ["s1@example.org"])
    database = sqlite_file(instance)
    env = {"NEWSLETTER_DATABASE_URL": f"sqlite:///{database}?timeout=0.2"}
    with exclusive(database):
        result = runner.invoke(
            app, ["--config", str(instance.config), "send", "2020-01", "--transport", "null"],
            env=env,
        )  # fmt: skip
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: SQLite database {database} is unavailable: database is locked")


def test_sigterm_during_the_back_off_stops_the_worker_at_once(
    runner: CliRunner, tmp_path: Path, processes: Callable[..., Process]
) -> None:
    instance = initialised(runner, tmp_path)
    load(runner, instance, ["g1@example.org"])
    queue(instance, "2020-01")
    database = sqlite_file(instance)
    server = start_sink()
    env = sender_env(server, NEWSLETTER_DATABASE_URL=f"sqlite:///{database}?timeout=0.2")
    try:
        with exclusive(database):
            worker = processes(instance, env, "worker")
            # The waits double: by the third the worker is in a back-off of 4 s or more.
            worker.says("retrying in 4 s")
            asked = time.monotonic()
            assert worker.terminate() == 0, worker.stderr
            assert time.monotonic() - asked < 2.0, worker.stderr
    finally:
        server.stop()
    assert not server.handler.received
    assert_one_line_events(worker.stderr)


@pytest.mark.postgres
def test_run_survives_terminated_postgres_backends(
    runner: CliRunner, tmp_path: Path, pg_url: str, processes: Callable[..., Process]
) -> None:
    """The scheduler's advisory lock connection dies too: `run` stands by, takes it back, and
    its sender finishes the campaign."""
    instance = initialised(runner, tmp_path, pg_url)
    people = [f"d{i:03d}@example.org" for i in range(150)]
    load(runner, instance, people)
    queue(instance, "2020-01")
    server = start_sink(RecordingHandler(data_delay=0.02))
    env = sender_env(
        server, NEWSLETTER_DELIVERY__BATCH_SIZE="20", NEWSLETTER_DELIVERY__LEASE_SECONDS="3",
        NEWSLETTER_SCHEDULE__POLL_SECONDS="0.2", NEWSLETTER_SCHEDULE__LOCK_RETRY_SECONDS="0.3",
    )  # fmt: skip
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    kill = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    try:
        daemon = processes(instance, env, "run")
        daemon.says("this process fires jobs")
        with psycopg.connect(plain, autocommit=True) as admin:
            mark, bursts = 0, 0
            deadline = time.monotonic() + TIMEOUT
            while True:
                [sent] = admin.execute(
                    "SELECT count(*) FROM delivery WHERE state = 'sent'"
                ).fetchone() or [0]
                if sent >= len(people):
                    break
                assert daemon.alive(), daemon.stderr
                assert time.monotonic() < deadline, daemon.stderr
                now = sum(received(server).values())
                if bursts < 3 and now >= mark + 40:
                    burst_end = time.monotonic() + 0.3
                    while time.monotonic() < burst_end:
                        admin.execute(kill)
                        time.sleep(0.01)
                    bursts, mark = bursts + 1, now
                time.sleep(0.05)
        # The lock was lost with its connection and is held again.
        wait_for(
            lambda: daemon.stderr.count("this process fires jobs") >= 2,
            lambda: f"the scheduler lock taken back\n{daemon.stderr}",
        )
        assert daemon.terminate() == 0, daemon.stderr
    finally:
        server.stop()
    counts = received(server)
    assert set(counts) == set(people) and max(counts.values()) == 1
    assert_one_line_events(daemon.stderr)


def test_faults_worth_waiting_out_are_told_from_mistakes(tmp_path: Path) -> None:
    """A full disk, a lock or a refused connection is waited out; a missing table is a bug."""
    engine = make_engine(f"sqlite:///{tmp_path / 'full.db'}")
    faults: list[DBAPIError] = []
    try:
        with engine.connect() as connection:
            connection.execute(text("CREATE TABLE t (b BLOB)"))
            connection.commit()
            # The file may not grow any further: SQLite's own SQLITE_FULL, as on a full disk.
            connection.execute(text("PRAGMA max_page_count = 8"))
            with pytest.raises(DBAPIError) as full:
                for _ in range(100):
                    connection.execute(text("INSERT INTO t VALUES (zeroblob(4000))"))
            faults.append(full.value)
            connection.rollback()
            with pytest.raises(DBAPIError) as missing:
                connection.execute(text("SELECT * FROM no_such_table"))
    finally:
        engine.dispose()
    refused = make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(DBAPIError) as unreachable:
            refused.connect()
    finally:
        refused.dispose()
    assert database_problem(faults[0]) == "database or disk is full"
    assert database_problem(missing.value) is None
    problem = database_problem(unreachable.value)
    assert problem and "\n" not in problem and "127.0.0.1" in problem
