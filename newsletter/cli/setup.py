"""`init` and `demo`: create an instance, or a whole demonstration in one command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from newsletter import directory, runtime
from newsletter.cli import demo_folder
from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    app,
    err,
    out,
    print_json,
)
from newsletter.cli.output import output_folder, write_output
from newsletter.cli.sending import send_with_progress
from newsletter.config import CONFIG_ENV, Settings, config_path, load_settings, sample_config
from newsletter.content import issue_intake
from newsletter.db import Session
from newsletter.errors import ConfigError
from newsletter.services.actors import Actor, Scope
from newsletter.services.issues import import_issue
from newsletter.services.subscribers import import_lists


def _initialise(settings: Settings) -> tuple[int, int]:
    engine = runtime.create_database(settings)
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
        output_folder(target.parent)
        err.print(f"wrote {write_output(target, sample_config())}", markup=False)
    settings = load_settings(target)
    sectors, embassies = _initialise(settings)
    err.print(
        f"database ready: {settings.resolved_database_url} ({sectors} sectors, {embassies} missions)",
        markup=False,
    )
    for line in next_steps(target):
        err.print(line, markup=False)


def next_steps(config: Path) -> list[str]:
    """How later commands find this instance, and what a newcomer does next."""
    config = config.resolve()
    if config.parent == Path.cwd().resolve() and config.name == "newsletter.toml":
        found = ["commands run in this folder use it"]
    else:
        found = [
            f"later commands find it when run in {config.parent} (cd {config.parent}),",
            f"or with --config {config}, or with {CONFIG_ENV}={config} in the environment",
        ]
    return [
        *found,
        "next: newsletter subscribers import LISTS.csv...   (one <embassy-code>.csv per mission)",
        "      newsletter issue import ISSUE.yaml           (or the journal's plain text)",
        "      newsletter preview SLUG --subscriber EMAIL   then   newsletter send SLUG",
    ]


DEMO_DOMAINS = ["example.org", "example.com"]  # the sample lists' addresses


@app.command()
def demo(
    dir: Annotated[Path, typer.Option("--dir", help="Folder for the demo instance.")] = Path(
        "demo"
    ),
    smtp: Annotated[str | None, typer.Option("--smtp", help="HOST:PORT of an SMTP server.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild DIR when it holds a demo built before.")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """A fresh instance in DIR: sample data and issue loaded, every digest sent, a summary.

    DIR must be new, empty, or a demo built before (rebuilt with --force): anything else in it
    is someone's, and is never deleted.
    """
    host, port = _host_port(smtp) if smtp else ("", 0)
    demo_folder.clear(dir, force=force)
    demo_folder.mark(dir)
    config = dir / "newsletter.toml"
    # The demo's sign-up form takes the sample lists' domains (their missions' subdomains too).
    toml = sample_config().replace(
        '# allowed_domains = ["mfa.gov.cn"]', f"allowed_domains = {json.dumps(DEMO_DOMAINS)}"
    )
    write_output(config, toml)
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
