"""`requests list|show|update`: staff follow "connect me" (对接) requests from a shell."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from newsletter.actors import Actor
from newsletter.cli.base import ConfigOption, JsonOption, err, group, out, print_json, settings_for
from newsletter.services import cooperation as service
from newsletter.services.cooperation import RequestView

requests_app = group("requests", 'Follow "connect me" (对接) requests on cooperation demands.')
RequestId = Annotated[int, typer.Argument(help="Request id (see `newsletter requests list`).")]


def _who(view: RequestView) -> str:
    return view.email or "[erased]"


@requests_app.command("list")
def requests_list(
    ctx: typer.Context,
    issue: Annotated[str | None, typer.Option("--issue", help="Only this issue (slug).")] = None,
    embassy: Annotated[
        str | None, typer.Option("--embassy", help="Only this mission (embassy code).")
    ] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="new, in-contact, matched or closed.")
    ] = None,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Requests, oldest first, with the item, the mission, the reader and the state."""
    views = service.list_requests(
        settings_for(ctx, config), issue=issue, mission=embassy, state=state
    )
    if json_:
        print_json([v.as_dict() for v in views])
        return
    table = Table("id", "issue", "item", "embassy", "state", "email", "organisation", "country")
    for v in views:
        table.add_row(
            str(v.id), v.issue, v.item, v.mission, v.state, _who(v), v.organisation, v.country
        )
    out.print(table)
    if not views:
        err.print("no requests match", markup=False)


@requests_app.command("show")
def requests_show(
    ctx: typer.Context,
    request_id: RequestId,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """One request in full: the reader's note and staff's."""
    v = service.show_request(settings_for(ctx, config), request_id)
    if json_:
        print_json(v.as_dict())
        return
    lines = [
        f"request {v.id}: {v.state}", f"issue: {v.issue}", f"item: {v.item}",
        f"embassy: {v.mission}", f"reader: {v.name + ' ' if v.name else ''}<{_who(v)}>",
        f"organisation: {v.organisation}", f"country: {v.country}", f"note: {v.note}",
        f"staff note: {v.staff_note}", f"created: {v.created_at.isoformat()}",
        f"updated: {v.updated_at.isoformat()}",
    ]  # fmt: skip
    for line in lines:
        out.print(line, markup=False, highlight=False)


@requests_app.command("update")
def requests_update(
    ctx: typer.Context,
    request_id: RequestId,
    state: Annotated[str, typer.Option("--state", help="new, in-contact, matched or closed.")],
    note: Annotated[str | None, typer.Option("--note", help="Staff's note on the request.")] = None,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Move a request to a state, with a note; audited."""
    v = service.update_request(
        settings_for(ctx, config), request_id, state=state, note=note, actor=Actor.cli()
    )
    if json_:
        print_json(v.as_dict())
        return
    err.print(f"request {v.id}: {v.state}", markup=False)
