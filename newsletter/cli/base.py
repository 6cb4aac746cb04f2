"""Shared pieces of the command line: the root app, options, settings and output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer._click import Context as ClickContext

from newsletter import runtime
from newsletter.config import Settings, load_settings
from newsletter.db import DatabaseUnavailableError, Session, database_problem, describe
from newsletter.errors import ConfigError, NewsletterError
from newsletter.services.signals import run_until_signal as run_until_signal

err = Console(stderr=True)
out = Console(highlight=False)
# The database the command was configured with, named in the message of a database fault.
DATABASE = "newsletter.database"


class _Group(typer.core.TyperGroup):
    """Turns every `NewsletterError`, and every database fault, into one line on stderr and exit
    status 1."""

    # typer vendors its own click: TyperGroup.invoke takes typer._click's Context, not click's.
    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except Exception as exc:
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
    help="Tailored e-journal digests for science-and-technology diplomats.",
)  # fmt: skip


def group(name: str, help: str) -> typer.Typer:
    """A sub-command group (`newsletter NAME ...`) registered on the root app."""
    sub = typer.Typer(no_args_is_help=True, help=help)
    app.add_typer(sub, name=name)
    return sub


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Config file (default ./newsletter.toml or $NEWSLETTER_CONFIG)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


@app.callback()
def _root(ctx: typer.Context, config: ConfigOption = None) -> None:
    ctx.obj = config


def settings_for(ctx: typer.Context, config: Path | None = None) -> Settings:
    """`--config` after the command wins over `--config` before it."""
    settings = load_settings(config or ctx.find_root().obj)
    ctx.meta[DATABASE] = describe(settings.resolved_database_url)
    return settings


def print_json(value: object) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


@contextmanager
def open_session(settings: Settings) -> Iterator[Session]:
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
