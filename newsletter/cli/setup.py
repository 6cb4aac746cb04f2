"""`init` and `demo`: create an instance, or a whole demonstration in one command."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from newsletter import directory, runtime
from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    app,
    err,
    out,
    print_json,
)
from newsletter.cli.sending import send_with_progress
from newsletter.config import Settings, config_path, load_settings, sample_config
from newsletter.content import issue_intake
from newsletter.db import Session, make_engine, upgrade
from newsletter.errors import ConfigError
from newsletter.services.actors import Actor, Scope
from newsletter.services.issues import import_issue
from newsletter.services.subscribers import import_lists


def _initialise(settings: Settings) -> tuple[int, int]:
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    reference = directory.read_reference(runtime.data_dir(settings))
    with Session(engine) as session:
        directory.sync_reference(session, reference)
        session.commit()
    engine.dispose()
    return len(reference.sectors), len(reference.embassies)


@app.command()
def init(
    ctx: typer.Context,
    dir: Annotated[Path | None, typer.Option("--dir", help="Folder of the instance.")] = None,
    config: ConfigOption = None,
) -> None:
    """Create newsletter.toml (if missing), the database at the latest schema, and reference data."""
    target = (dir / "newsletter.toml") if dir else config_path(config or ctx.find_root().obj)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(sample_config(), encoding="utf-8")
        err.print(f"wrote {target}")
    settings = load_settings(target)
    sectors, embassies = _initialise(settings)
    err.print(
        f"database ready: {settings.resolved_database_url} ({sectors} sectors, {embassies} missions)"
    )


@app.command()
def demo(
    dir: Annotated[Path, typer.Option("--dir", help="Folder for the demo instance.")] = Path(
        "demo"
    ),
    smtp: Annotated[str | None, typer.Option("--smtp", help="HOST:PORT of an SMTP server.")] = None,
    json_: JsonOption = False,
) -> None:
    """A fresh instance in DIR: sample data and issue loaded, every digest sent, a summary."""
    host, port = _host_port(smtp) if smtp else ("", 0)
    config = dir / "newsletter.toml"
    for leftover in (config, *dir.glob("newsletter.db*")):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(dir / "outbox", ignore_errors=True)
    dir.mkdir(parents=True, exist_ok=True)
    config.write_text(sample_config(), encoding="utf-8")
    settings = load_settings(config)
    if smtp:
        settings = settings.overridden({"transport": "smtp", "smtp.host": host, "smtp.port": port})
    _initialise(settings)
    actor = Actor.cli()
    lists = import_lists(
        settings, [runtime.data_dir(settings) / "lists"], actor=actor, scope=Scope.all(),
        mail=False,
    )  # fmt: skip
    subscribers = lists.report.added + lists.report.updated + lists.report.unchanged
    sample = issue_intake.sample_issue_path()
    issue = import_issue(settings, sample.read_bytes(), source=str(sample), actor=actor)
    report = send_with_progress(settings, issue.slug, actor=actor, quiet=json_)
    outbox = settings.path(settings.outbox).resolve()
    if json_:
        print_json({**report.as_dict(), "subscribers": subscribers, "outbox": str(outbox)})
        return
    out.print(
        f"demo: {subscribers} subscribers, {report.profiles} profiles, {report.sent} messages, "
        f"{report.bytes / 1024:.0f} KiB in {report.seconds:.2f} s"
    )
    if settings.transport == "file":
        previews = sorted(outbox.glob("*.html"))
        out.print(f"outbox: {outbox} ({len(previews)} .eml + .html previews)")
        if previews:
            out.print(f"open a preview: {previews[0]}")
    else:
        out.print(f"sent through {host}:{port}")


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--smtp {value!r}: give HOST:PORT, such as 127.0.0.1:2525")
    return host, int(port)
