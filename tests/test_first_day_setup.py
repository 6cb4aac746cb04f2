"""A newcomer's first day at the command line: nothing lost by accident, errors that tell the
truth, output that is whole wherever it goes (issue 10: set-up and output)."""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from newsletter.cli import app, load_all
from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import make_engine
from newsletter.delivery.locks import SenderLock
from tests.conftest import LISTS, Instance, cli, fails, invoke, load_sample, make_instance

NEWSLETTER = str(Path(sys.executable).with_name("newsletter"))
SAMPLE = sample_issue_path().read_text(encoding="utf-8")


def run(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env=env)


def one_error_line(result: Result) -> str:
    """The one `error: ...` line of a refused command (exit 1, no traceback)."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working folder, no instance in it and none named by the environment."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("NEWSLETTER_CONFIG", raising=False)
    yield folder


# --- 1. demo never erases what it did not build ----------------------------------------------


def test_demo_refuses_a_real_instance_and_changes_nothing(
    runner: CliRunner, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    assert run(runner, "init", "--dir", str(real)).exit_code == 0
    instance = Instance(real, real / "newsletter.toml")
    cli(
        runner,
        instance,
        "subscribers",
        "add",
        "li.na@mission.example.org",
        "--embassy",
        "de-berlin",
    )
    before = listing(real)

    for force in ([], ["--force"]):
        line = one_error_line(run(runner, "demo", "--dir", str(real), *force))
        assert "newsletter.toml" in line and "newsletter.db" in line, line
        assert "nothing was changed" in line
    assert listing(real) == before
    shown = json.loads(cli(runner, instance, "subscribers", "list", "--json"))
    assert [s["email"] for s in shown] == ["li.na@mission.example.org"]


def test_demo_rebuilds_its_own_folder_only_with_force(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    assert run(runner, "demo", "--dir", str(folder), "--json").exit_code == 0
    first_key = tomllib.loads((folder / "newsletter.toml").read_text())["secret_key"]
    before = listing(folder)

    line = one_error_line(run(runner, "demo", "--dir", str(folder)))
    assert "--force" in line and "built before" in line, line
    assert listing(folder) == before

    rebuilt = run(runner, "demo", "--dir", str(folder), "--force", "--json")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert tomllib.loads((folder / "newsletter.toml").read_text())["secret_key"] != first_key
    assert json.loads(rebuilt.stdout)["sent"] == sum(name.endswith(".eml") for name in before)

    # Anything of the staff member's beside the demo stops even --force.
    (folder / "notes.txt").write_text("my notes", encoding="utf-8")
    kept = listing(folder)
    line = one_error_line(run(runner, "demo", "--dir", str(folder), "--force"))
    assert "notes.txt" in line, line
    assert listing(folder) == kept


# --- 3. outside an instance, say so and create nothing ---------------------------------------


def test_outside_an_instance_every_command_says_where_it_looked(
    runner: CliRunner, elsewhere: Path
) -> None:
    for command in (["issue", "list"], ["subscribers", "list"], ["campaign", "list"]):
        line = one_error_line(run(runner, *command))
        assert f"no newsletter.toml found in {elsewhere}" in line, line
        assert "--config" in line and "NEWSLETTER_CONFIG" in line, line
    named = elsewhere / "nowhere" / "newsletter.toml"
    line = one_error_line(run(runner, "issue", "list", env={"NEWSLETTER_CONFIG": str(named)}))
    assert f"$NEWSLETTER_CONFIG names {named}, which does not exist" in line, line
    assert list(elsewhere.iterdir()) == []


def test_an_instance_named_by_the_environment_alone_needs_no_file(
    runner: CliRunner, elsewhere: Path, tmp_path: Path
) -> None:
    made = run(runner, "init", "--dir", str(tmp_path / "instance"))
    assert made.exit_code == 0, made.output
    written = tomllib.loads((tmp_path / "instance" / "newsletter.toml").read_text())
    database = f"sqlite:///{tmp_path / 'instance' / 'newsletter.db'}"
    env = {"NEWSLETTER_DATABASE_URL": database, "NEWSLETTER_SECRET_KEY": written["secret_key"]}
    listed = run(runner, "embassies", "list", "--json", env=env)
    assert listed.exit_code == 0, listed.output
    assert {"de-berlin"} <= {row["code"] for row in json.loads(listed.stdout)}
    # One of the two is not an instance: the message names both.
    line = one_error_line(run(runner, "issue", "list", env={"NEWSLETTER_DATABASE_URL": database}))
    assert "NEWSLETTER_DATABASE_URL and NEWSLETTER_SECRET_KEY" in line, line
    assert list(elsewhere.iterdir()) == []


def test_a_config_without_its_database_creates_no_empty_one(
    runner: CliRunner, tmp_path: Path
) -> None:
    instance = make_instance(tmp_path, "sqlite:///data/newsletter.db")
    line = one_error_line(invoke(runner, instance, "issue", "list"))
    assert f"SQLite database {tmp_path / 'data' / 'newsletter.db'} does not exist" in line, line
    assert "newsletter init" in line
    assert not (tmp_path / "data").exists()


def test_init_dir_says_how_later_commands_find_it(runner: CliRunner, elsewhere: Path) -> None:
    target = elsewhere / "instance"
    made = run(runner, "init", "--dir", str(target))
    assert made.exit_code == 0, made.output
    config = target / "newsletter.toml"
    assert f"cd {target}" in made.stderr
    assert f"--config {config}" in made.stderr and f"NEWSLETTER_CONFIG={config}" in made.stderr
    assert "next: newsletter subscribers import" in made.stderr
    # Each way it names works.
    assert run(runner, "--config", str(config), "issue", "list").exit_code == 0
    assert run(runner, "issue", "list", env={"NEWSLETTER_CONFIG": str(config)}).exit_code == 0
    os.chdir(target)
    assert run(runner, "issue", "list").exit_code == 0


# --- 4. a database that cannot be reached says why -------------------------------------------


@pytest.mark.postgres
def test_a_missing_or_unreachable_postgresql_is_named(
    runner: CliRunner, tmp_path: Path, pg_admin: str
) -> None:
    base = pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    missing = make_instance(tmp_path, f"{base}/newsletter_no_such_database")
    line = one_error_line(invoke(runner, missing, "issue", "list"))
    assert "newsletter_no_such_database" in line and "does not exist" in line, line
    assert "no schema yet" not in line
    line = one_error_line(invoke(runner, missing, "init"))
    assert "newsletter_no_such_database" in line and "create it (`createdb`)" in line, line
    assert "check that it is running" not in line

    port = free_port()
    closed = make_instance(tmp_path, f"postgresql+psycopg://postgres@127.0.0.1:{port}/newsletter")
    line = one_error_line(invoke(runner, closed, "subscribers", "list"))
    assert f"127.0.0.1:{port}" in line and "Connection refused" in line, line
    assert "no schema yet" not in line


# --- 5. a reviewed issue with broken YAML gets the YAML error --------------------------------


def test_a_yaml_syntax_error_names_file_line_and_column(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    lines = SAMPLE.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("number:"))
    lines.insert(at + 1, "  reviewer: [unclosed\n")
    broken = "".join(lines)
    for name in ("review.yaml", "review.txt"):  # YAML by name, then by shape
        file = tmp_path / name
        file.write_text(broken, encoding="utf-8")
        line = fails(runner, instance, "issue", "import", str(file)).strip()
        match = re.match(rf"error: {re.escape(str(file))}:(\d+):(\d+): YAML syntax error: ", line)
        assert match, line
        assert int(match[1]) == at + 2, line  # the line after the one broken, 1-based
        assert "动态" not in line and "not an issue" not in line
    assert json.loads(cli(runner, instance, "issue", "list", "--json")) == []


# --- 7. a bad output path is one line, everywhere --------------------------------------------


@pytest.fixture
def sent(runner: CliRunner, instance: Instance) -> Instance:
    load_sample(runner, instance)
    cli(runner, instance, "send", "2020-01")
    return instance


def test_bad_output_paths_give_one_line_each(
    runner: CliRunner, sent: Instance, tmp_path: Path
) -> None:
    text_export = Path(__file__).parent / "fixtures" / "kjcxsd-2020-01.txt"
    missing, folder = tmp_path / "no-such-folder" / "out", tmp_path / "a-folder"
    folder.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("mine", encoding="utf-8")
    email = "li.wei@de-berlin.example.org"
    writers = {
        "convert": ["issue", "convert", str(text_export), "-o"],
        "preview": ["preview", "2020-01", "--subscriber", email, "-o"],
        "report": ["campaign", "report", "1", "--csv"],
        "export": ["subscribers", "export", "-o"],
    }
    for name, command in writers.items():
        for target, words in (
            (missing, f"folder {missing.parent} does not exist"),
            (folder, "it is a folder"),
        ):
            line = one_error_line(invoke(runner, sent, *command, str(target)))
            assert line.startswith(f"error: cannot write {target}: {words}"), (name, line)
    line = one_error_line(
        invoke(runner, sent, "subscribers", "export", "--by-embassy", f"{a_file}/x")
    )
    assert line == f"error: cannot create folder {a_file}/x: {a_file} is a file"
    assert a_file.read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_preview_writes_to_stdout_and_report_lists_recipients(
    runner: CliRunner, sent: Instance
) -> None:
    email = "li.wei@de-berlin.example.org"
    for extra in ([], ["-o", "-"]):
        page = cli(runner, sent, "preview", "2020-01", "--subscriber", email, *extra)
        assert page.lstrip().lower().startswith("<!doctype html"), page[:80]
    listed = cli(runner, sent, "campaign", "report", "1", "--recipients")
    recipients = json.loads(cli(runner, sent, "campaign", "report", "1", "--json"))["recipients"]
    assert len(recipients) > 50
    for row in recipients:
        assert re.search(rf"{re.escape(row['email'])}\s+│ {row['embassy']}\s+│ sent ", listed)


# --- 14. help and output that are whole ------------------------------------------------------


def _every_command(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _every_command(sub, (*path, name))


def _command_at(root: object, path: tuple[str, ...]) -> object:
    command: object = root
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


def test_help_shows_every_option_whole_and_no_python_types(runner: CliRunner) -> None:
    serve = run(runner, "serve", "--help").stdout
    assert "--subscribe-per-address N" in serve and "([web])" in serve
    assert "()" not in serve and "…" not in serve
    assert re.match(r"Usage: \S+ send \[OPTIONS\] SLUG\n", run(runner, "send", "--help").stdout)
    load_all()  # every command's module: the walk below sees the whole tree
    root = typer.main.get_command(app)
    for path in _every_command(root):
        shown = run(runner, *path, "--help")
        assert shown.exit_code == 0, (path, shown.output)
        leaked = re.findall(r"<(?:bool|str|int|path|list\[\w+\])[^>]*>", shown.stdout)
        assert not leaked, (path, leaked)
        # Each sub-command's line is there whole (wrapped, never cut with "...").
        whole = re.sub(r"-\s+", "-", " ".join(shown.stdout.split()))
        for sub in getattr(_command_at(root, path), "commands", {}).values():
            line = (sub.help or "").strip().splitlines()[0]
            assert re.sub(r"-\s+", "-", line) in whole, (path, line)


def test_root_help_follows_the_work_and_version_is_printed(runner: CliRunner) -> None:
    shown = run(runner, "--help").stdout
    order = ["Set up:", "  init ", "Content:", "  issue ", "Subscribers:", "  subscribers ",
             "Send:", "  send ", "Follow up:", "  campaign "]  # fmt: skip
    places = [shown.index(f"\n{word}") for word in order]
    assert places == sorted(places), shown
    version = run(runner, "--version")
    assert version.exit_code == 0 and re.fullmatch(r"newsletter \d+\.\d+\.\d+\n", version.stdout)


def test_piped_tables_and_messages_are_never_cut(runner: CliRunner, tmp_path: Path) -> None:
    deep = tmp_path / ("a-long-folder-name-for-an-instance-" * 4) / "instance"
    made = run(runner, "init", "--dir", str(deep))
    ready = [line for line in made.stderr.splitlines() if line.startswith("database ready:")]
    assert ready and str(deep / "newsletter.db") in ready[0], made.stderr
    instance = Instance(deep, deep / "newsletter.toml")
    email = "a.very.long.address.of.a.counsellor.who.likes.long.names@de-berlin.example.org"
    cli(runner, instance, "subscribers", "add", email, "--embassy", "de-berlin")
    assert email in cli(runner, instance, "subscribers", "list")
    assert "de-berlin" in cli(runner, instance, "embassies", "list")


def test_a_narrow_terminal_keeps_key_columns_whole(runner: CliRunner, instance: Instance) -> None:
    cli(runner, instance, "subscribers", "import", str(LISTS))
    emails = [
        s["email"] for s in json.loads(cli(runner, instance, "subscribers", "list", "--json"))
    ]
    screen = _at_a_terminal(instance, 60, "subscribers", "list")
    for email in emails:
        assert email in screen, email


def _at_a_terminal(instance: Instance, columns: int, *args: str) -> str:
    """What `newsletter ARGS` shows on a terminal `columns` wide (a pseudo-terminal)."""
    parent, child = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "xterm"}
    with subprocess.Popen(
        [NEWSLETTER, "--config", str(instance.config), *args],
        stdin=subprocess.DEVNULL, stdout=child, stderr=subprocess.PIPE, env=env,
    ) as process:  # fmt: skip
        os.close(child)
        chunks = []
        while True:
            try:
                chunk = os.read(parent, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=60) == 0
    os.close(parent)
    return b"".join(chunks).decode("utf-8", errors="replace")


# --- what will send a resumed campaign; whose interests explain shows ------------------------


def test_resume_says_what_will_send_the_campaign(runner: CliRunner, instance: Instance) -> None:
    load_sample(runner, instance)
    invoke(runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-host",
           "127.0.0.1", "--smtp-port", str(free_port()))  # fmt: skip
    [campaign] = json.loads(cli(runner, instance, "campaign", "list", "--json"))
    assert campaign["state"] == "paused"
    resumed = invoke(runner, instance, "campaign", "resume", str(campaign["id"]))
    assert resumed.exit_code == 0, resumed.output
    said = resumed.stderr.strip()
    if instance.settings.database_url.startswith("sqlite"):
        assert said.endswith(
            "no sender is running on this database: `newsletter send 2020-01` sends it now, or "
            "start `newsletter worker` (or `newsletter run`) to send it in the background"
        ), said
        cli(runner, instance, "campaign", "pause", str(campaign["id"]))
        engine = make_engine(instance.settings.resolved_database_url)
        try:
            with SenderLock(engine):
                again = invoke(runner, instance, "campaign", "resume", str(campaign["id"]))
        finally:
            engine.dispose()
        assert f"the running sender (pid {os.getpid()}:" in again.stderr, again.output
    else:
        assert said.endswith(
            "a running `newsletter worker` or `newsletter run` picks it up; if none runs, "
            "`newsletter send 2020-01` sends it now"
        ), said


def test_explain_says_when_interests_are_the_missions_defaults(
    runner: CliRunner, instance: Instance
) -> None:
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    chose = "chose@de-berlin.example.org"
    none = "none@de-berlin.example.org"
    cli(runner, instance, "subscribers", "add", chose, "--embassy", "de-berlin", "--sectors", "ai")
    cli(runner, instance, "subscribers", "add", none, "--embassy", "de-berlin")
    first = cli(runner, instance, "explain", "2020-01", "--subscriber", none).splitlines()[0]
    assert first.endswith("(the mission's defaults: the subscriber chose no sectors)"), first
    first = cli(runner, instance, "explain", "2020-01", "--subscriber", chose).splitlines()[0]
    assert first == f"{chose}: interests ai"
