"""Shared pieces of the command line: the root app, options, settings and output."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main
from rich.cells import cell_len
from rich.console import Console, ConsoleDimensions
from rich.table import Table
from typer._click import Command as ClickCommand
from typer._click import Context as ClickContext
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from newsletter.cli.index import COMMANDS
from newsletter.errors import ConfigError, NewsletterError
from newsletter.services.signals import run_until_signal as run_until_signal

# The settings, the database and everything under them are imported by the command that needs
# them, not here: `newsletter --help` and `--version` start without SQLAlchemy or pydantic.
if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.db import Session

# Piped or redirected output is read by grep, a file or a mail: a line is never cut or wrapped
# at 80 columns there (a `file:line` split in two, an address cut short).
_UNBOUNDED = 10_000
# Columns a reader copies into the next command or searches for: never wrapped nor cut.
KEY_COLUMNS = frozenset(
    {"id", "email", "code", "slug", "date", "embassy", "issue", "at", "sent at", "imported"}
)


class _Stream(Console):
    """A console as wide as its lines when it is not a terminal; at a terminal, a table is
    printed as wide as its key columns need (the terminal folds it) rather than cutting them."""

    @property
    def size(self) -> ConsoleDimensions:
        dimensions = super().size
        if self.is_terminal or self._width is not None:
            return dimensions
        return ConsoleDimensions(_UNBOUNDED, dimensions.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def print(self, *objects: Any, **options: Any) -> None:
        needed = _key_width(objects[0]) if len(objects) == 1 else 0
        if needed <= self.width:
            super().print(*objects, **options)
            return
        # `print(width=...)` never goes past the console's width: widen the console itself.
        was = self._width
        self._width = needed
        try:
            super().print(*objects, **options)
        finally:
            self._width = was


def _key_width(table: object) -> int:
    """The narrowest width that shows every key column of a table in full (0: not a table);
    key columns are set not to wrap."""
    if not isinstance(table, Table):
        return 0
    width = len(table.columns) + 1  # the vertical rules of the default box
    for column in table.columns:
        cells = [str(column.header), *(str(c) for c in column.cells)]
        if str(column.header) in KEY_COLUMNS:
            column.no_wrap = True
            column.min_width = max(cell_len(c) for c in cells)
            width += column.min_width + 2
        else:
            # Prose wraps between words: room for a short word per line is enough.
            longest = max((cell_len(w) for c in cells for w in c.split()), default=1)
            width += min(longest, 12) + 2
    return width


err = _Stream(stderr=True)
out = _Stream(highlight=False)
# The database the command was configured with, named in the message of a database fault.
DATABASE = "newsletter.database"

# The root help lists commands in the order of the work; anything else comes last.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Set up", ("init", "demo", "embassies", "sectors", "calendar", "staff")),
    ("Content", ("issue",)),
    ("Subscribers", ("subscribers",)),
    ("Send", ("explain", "preview", "send", "schedule", "digest")),
    ("Follow up", ("campaign", "bounces", "audit")),
    ("Run as a service", ("run", "worker", "serve", "admin")),
)
# What an option's value is, in the help (`--config FILE`), rather than a Python type.
_METAVARS = {
    "config": "FILE", "output": "FILE", "csv_file": "FILE", "file": "FILE", "dir": "DIR",
    "outbox": "DIR", "by_embassy": "DIR", "paths": "PATH", "subscriber": "EMAIL", "email": "EMAIL",
    "emails": "EMAIL", "old_email": "OLD_EMAIL", "new_email": "NEW_EMAIL", "smtp": "HOST:PORT",
    "host": "HOST", "smtp_host": "HOST", "port": "PORT", "smtp_port": "PORT", "campaign_id": "ID",
    "digest_id": "ID", "plan_ids": "ID", "embassy": "CODE", "sector": "CODE", "sectors": "CODES",
    "local": "HH:MM", "date": "YYYY-MM-DD", "at": "TIME", "all_since": "TIME", "slug": "SLUG",
    "soft_threshold": "N", "soft_window_days": "DAYS", "subscribe_per_ip": "N",
    "subscribe_per_address": "N", "reason": "TEXT", "matching": "TEXT", "cron": "CRON",
    "language": "zh|en", "transport": "file|smtp|null",
}  # fmt: skip


class _Argument(TyperArgument):
    """An argument shown by its metavar alone: typer would add the Python type (`<list[Path]>`)."""

    def display_type_rich(self, ctx: ClickContext) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        # Click's own usage: `send SLUG`, `[EMAIL]...`, not typer's `{SLUG}`.
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def _plain_help(command: Any) -> None:
    """Plain click help for the whole tree: typer's rich panels read `[web]` in a help text as
    markup (printing "()"), cut long option names and show Python types."""
    if isinstance(command, TyperCommand | TyperGroup):
        command.rich_markup_mode = None
    if command.help and not command.short_help:
        # Click would cut the line to fit a column ("until..."); the formatter wraps it instead.
        command.short_help = _first_line(command.help)
    for param in command.params:
        if isinstance(param, TyperArgument):
            param.__class__ = _Argument
        if param.metavar is not None or (isinstance(param, TyperOption) and param.is_flag):
            continue
        choices = param.type_descriptor.choices if param.type_descriptor.is_choice else None
        param.metavar = (
            "|".join(str(getattr(c, "value", c)) for c in choices)
            if choices
            else _METAVARS.get(param.name or "", (param.name or "value").upper())
        )
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)


def _first_line(text: str) -> str:
    """The first paragraph of a help text, on one line (a docstring's first sentence may wrap)."""
    return " ".join(text.strip().split("\n\n", 1)[0].split())


class _Group(TyperGroup):
    """Turns every `NewsletterError`, and every database fault, into one line on stderr and exit
    status 1."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _plain_help(self)

    def list_commands(self, ctx: ClickContext) -> list[str]:
        names = set(self.commands) | set(COMMANDS)
        ordered = [name for _, listed in SECTIONS for name in listed if name in names]
        return ordered + sorted(names - set(ordered))

    def get_command(self, ctx: ClickContext, cmd_name: str) -> ClickCommand | None:
        """A command's module is imported when the command is used (`cli/index.py` says which):
        one command never pays for the imports of all the others."""
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in COMMANDS:
            for module in COMMANDS[cmd_name][0]:
                importlib.import_module(f"newsletter.cli.{module}")
            command = typer.main.get_group(app).commands.get(cmd_name)
            if command is not None:
                _plain_help(command)
                self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: ClickContext, formatter: Any) -> None:
        # Loaded commands speak for themselves; the others by their line in the index.
        shown = {n: help for n, (_, help) in COMMANDS.items()}
        shown.update({n: c.short_help or "" for n, c in self.commands.items() if not c.hidden})
        known = {name for _, names in SECTIONS for name in names}
        sections = [*SECTIONS, ("Other", tuple(sorted(set(shown) - known)))]
        # One width for the names of every section, so the descriptions line up.
        pad = max((len(n) for n in shown), default=0)
        for title, names in sections:
            rows = [(n.ljust(pad), shown[n]) for n in names if n in shown]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    # typer vendors its own click: TyperGroup.invoke takes typer._click's Context, not click's.
    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except Exception as exc:
            from newsletter.db import DatabaseUnavailableError, database_problem

            # Connection lost or refused, database locked, disk full: the staff member's move
            # is to look at the database, which a driver's traceback does not say.
            problem = database_problem(exc)
            if problem is None:
                raise
            fault = DatabaseUnavailableError(ctx.meta.get(DATABASE, "the database"), problem)
            typer.echo(f"error: {fault}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None, help="Tailored e-journal digests for science-and-technology diplomats.",
)  # fmt: skip


def group(name: str, help: str) -> typer.Typer:
    """A sub-command group (`newsletter NAME ...`) registered on the root app."""
    sub = typer.Typer(no_args_is_help=True, help=help, rich_markup_mode=None)
    app.add_typer(sub, name=name)
    return sub


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Config file (default ./newsletter.toml or $NEWSLETTER_CONFIG)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"newsletter {package_version('newsletter')}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: ConfigOption = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = config


def settings_for(ctx: typer.Context, config: Path | None = None) -> Settings:
    """`--config` after the command wins over `--config` before it."""
    from newsletter.config import config_path, load_settings
    from newsletter.db import describe

    explicit = config or ctx.find_root().obj
    if explicit is None and not config_path(None).exists():
        if not _described_by_environment():
            raise ConfigError(_no_config_found())
        settings = load_settings(None)  # a container's instance: its environment is the file
    else:
        settings = load_settings(explicit, required=True)
    ctx.meta[DATABASE] = describe(settings.resolved_database_url)
    return settings


# Without a file, an instance is still named completely by these two: where its data lives and
# the key its links are signed with (a default for either would be a new, empty instance).
_ENVIRONMENT_INSTANCE = ("NEWSLETTER_DATABASE_URL", "NEWSLETTER_SECRET_KEY")


def _described_by_environment() -> bool:
    return all(os.environ.get(name) for name in _ENVIRONMENT_INSTANCE)


def _no_config_found() -> str:
    from newsletter.config import CONFIG_ENV, config_path

    where = config_path(None)
    if os.environ.get(CONFIG_ENV):
        found = f"${CONFIG_ENV} names {where}, which does not exist"
    else:
        found = (
            f"no newsletter.toml found in {Path.cwd()} (looked for ./newsletter.toml; "
            f"no --config FILE given, ${CONFIG_ENV} not set)"
        )
    return (
        f"{found}; run this in the instance folder, give --config DIR/newsletter.toml or set "
        f"{CONFIG_ENV}, or create an instance with `newsletter init --dir DIR` (an instance "
        f"without a file sets {' and '.join(_ENVIRONMENT_INSTANCE)} in the environment)"
    )


def print_json(value: object) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


@contextmanager
def open_session(settings: Settings) -> Iterator[Session]:
    from newsletter import runtime
    from newsletter.db import Session

    engine = runtime.open_database(settings)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    finally:
        engine.dispose()


def read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
