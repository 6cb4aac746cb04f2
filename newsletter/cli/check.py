"""`check`: the sending setup judged before a send, and the DNS records to publish."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter.cli.base import ConfigOption, JsonOption, app, out, print_json, settings_for
from newsletter.mail.sending_setup import Level
from newsletter.services.setup_check import check_setup

_MARK = {Level.ERROR: "error  ", Level.WARNING: "warning", Level.OK: "ok     "}


@app.command("check")
def check(
    ctx: typer.Context,
    config: ConfigOption = None,
    probe: Annotated[
        bool,
        typer.Option("--probe", help="Also open one session with the relay: greeting, TLS, login."),
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Judge the sending setup (https links, DKIM, the relay) and print the DNS records to
    publish. Exit 1 when something would make `send` refuse or providers reject the mail."""
    settings = settings_for(ctx, config)
    report = check_setup(settings, probe_relay=probe)
    if json_:
        print_json(
            {
                "ok": report.ok,
                "findings": [
                    {"level": f.level.value, "topic": f.topic, "message": f.message}
                    for f in report.findings
                ],
                "dns": [
                    {"name": r.name, "type": r.type, "value": r.value, "why": r.why}
                    for r in report.records
                ],
            }
        )
    else:
        for finding in report.findings:
            out.print(
                f"{_MARK[finding.level]}  {finding.topic}: {finding.message}",
                soft_wrap=True,
                markup=False,
            )
        out.print("\nPublish in DNS (starting points):")
        for record in report.records:
            out.print(
                f"  {record.name}  {record.type}  {record.value}", soft_wrap=True, markup=False
            )
            out.print(f"      {record.why}", soft_wrap=True, markup=False)
    if not report.ok:
        raise typer.Exit(1)
