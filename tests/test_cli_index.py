"""The command index that lets `newsletter --help` start without importing every command."""

from __future__ import annotations

import subprocess
import sys

import typer.main
from typer.testing import CliRunner

from newsletter.cli import app, load_all
from newsletter.cli.index import COMMANDS


def _defined() -> dict[str, tuple[set[str], str]]:
    """Every root command and group the modules define: the modules behind it, its help line."""
    load_all()

    def modules(typer_app: typer.Typer) -> set[str]:
        found = {c.callback.__module__ for c in typer_app.registered_commands if c.callback}
        for sub in typer_app.registered_groups:
            assert sub.typer_instance is not None
            found |= modules(sub.typer_instance)
        return found

    root = typer.main.get_group(app)
    defined: dict[str, tuple[set[str], str]] = {}
    for command in app.registered_commands:
        assert command.callback is not None
        name = command.name or command.callback.__name__
        defined.setdefault(name, (set(), ""))[0].add(command.callback.__module__)
    for sub in app.registered_groups:
        assert sub.name is not None and sub.typer_instance is not None
        defined.setdefault(sub.name, (set(), ""))[0].update(modules(sub.typer_instance))
    return {
        name: ({m.rsplit(".", 1)[1] for m in found}, root.commands[name].short_help or "")
        for name, (found, _) in defined.items()
    }


def test_the_index_names_every_command_its_modules_and_its_help_line() -> None:
    defined = _defined()
    assert set(COMMANDS) == set(defined)
    for name, (modules, help_line) in COMMANDS.items():
        assert set(modules) == defined[name][0], name
        assert help_line == defined[name][1], name


def test_root_help_and_version_import_no_command_module() -> None:
    probe = (
        "import sys\n"
        "from newsletter.cli import main\n"
        "sys.argv = ['newsletter', sys.argv[1]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = {'sqlalchemy', 'sqlmodel', 'fastapi', 'pydantic', 'mrml', 'newsletter.services.sending'}\n"
        "print(sorted(heavy & set(sys.modules)), file=sys.stderr)\n"
    )
    for option in ("--help", "--version"):
        done = subprocess.run([sys.executable, "-c", probe, option], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == "[]", (option, done.stderr)
        assert done.stdout.strip(), option


def test_a_command_loads_only_when_used_and_runs_the_same(runner: CliRunner) -> None:
    shown = runner.invoke(app, ["check", "--help"])
    assert shown.exit_code == 0 and "--probe" in shown.stdout
    unknown = runner.invoke(app, ["sned"])
    assert unknown.exit_code == 2 and "send" in unknown.output  # click's "Did you mean"
