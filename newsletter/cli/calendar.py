"""`embassies closure add|list|remove`: days a mission does not work, besides public holidays."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from newsletter.actors import Actor
from newsletter.cli.base import ConfigOption, JsonOption, err, out, print_json, settings_for
from newsletter.cli.reference import embassies_app
from newsletter.services import calendar as service

closure_app = typer.Typer(
    no_args_is_help=True,
    help="Days a mission is closed: `--working-days` sends and digests move past them.",
)
embassies_app.add_typer(closure_app, name="closure")


def _table(rows: list[service.ClosureView]) -> Table:
    table = Table("id", "mission", "from", "to", "reason")
    for r in rows:
        table.add_row(str(r.id), r.mission, r.first.isoformat(), r.last.isoformat(), r.reason)
    return table


@closure_app.command("add")
def closure_add(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="The mission (see `newsletter embassies list`).")],
    date: Annotated[str, typer.Argument(help="The first closed day, YYYY-MM-DD.")],
    to: Annotated[
        str | None, typer.Option("--to", help="The last closed day (default: DATE alone).")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why, as plans will show it.")] = "",
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Close a mission for a day or a span of days (audited)."""
    view = service.add_closure(settings_for(ctx, config), code, date, to, reason, actor=Actor.cli())
    if json_:
        print_json(view.as_dict())
        return
    err.print(
        f"closure {view.id}: {view.mission} closed {view.first.isoformat()} to "
        f"{view.last.isoformat()}" + (f" ({view.reason})" if view.reason else ""),
        markup=False,
    )


@closure_app.command("list")
def closure_list(
    ctx: typer.Context,
    code: Annotated[str | None, typer.Argument(help="Only this mission's closures.")] = None,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Closures by mission and first day."""
    rows = service.list_closures(settings_for(ctx, config), code)
    if json_:
        print_json([r.as_dict() for r in rows])
        return
    out.print(_table(rows))


@closure_app.command("remove")
def closure_remove(
    ctx: typer.Context,
    closure_id: Annotated[int, typer.Argument(help="Closure id (see `closure list`).")],
    config: ConfigOption = None,
) -> None:
    """Remove a closure (audited); plans already made keep their dates."""
    view = service.remove_closure(settings_for(ctx, config), closure_id, actor=Actor.cli())
    err.print(
        f"closure {view.id} removed ({view.mission} {view.first.isoformat()} to "
        f"{view.last.isoformat()})",
        markup=False,
    )
