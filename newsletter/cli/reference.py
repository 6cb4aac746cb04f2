"""`embassies list` and `sectors list`."""

from __future__ import annotations

from dataclasses import asdict

import typer
from rich.table import Table

from newsletter import directory
from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    group,
    open_session,
    out,
    print_json,
    settings_for,
)

embassies_app = group("embassies", "The embassy directory.")
sectors_app = group("sectors", "The sector taxonomy.")


@embassies_app.command("list")
def embassies_list(
    ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False
) -> None:
    """Missions with their time zone and working week."""
    settings = settings_for(ctx, config)
    with open_session(settings) as session:
        rows = list(directory.embassies(session).values())
    if json_:
        print_json(
            [
                {
                    **asdict(e),
                    "regions": list(e.regions),
                    "default_sectors": list(e.default_sectors),
                }
                for e in rows
            ]
        )
        return
    table = Table("code", "name", "country", "timezone", "week")
    for e in rows:
        table.add_row(e.code, e.name_zh, e.country, e.timezone, e.working_week)
    out.print(table)


@sectors_app.command("list")
def sectors_list(
    ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False
) -> None:
    """The sector taxonomy."""
    settings = settings_for(ctx, config)
    with open_session(settings) as session:
        rows = list(directory.sectors(session).values())
    if json_:
        print_json([{**asdict(s), "keywords": list(s.keywords)} for s in rows])
        return
    table = Table("code", "zh", "en")
    for s in rows:
        table.add_row(s.code, s.zh, s.en)
    out.print(table)
