"""`audit list` and `audit verify`: the append-only chain of who did what."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter.cli.base import ConfigOption, JsonOption, err, group, out, print_json, settings_for
from newsletter.services import audit as service

audit_app = group("audit", "The audit chain: every staff, subscriber and system action.")


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    actor: Annotated[
        str | None,
        typer.Option("--actor", help="kind:id (cli:alice, staff:li@example.org) or an id."),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option("--action", help="An action (staff.add) or a family (staff, subscriber)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest events shown.")] = 100,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """The newest events first."""
    events = service.list_events(settings_for(ctx, config), actor=actor, action=action, limit=limit)
    if json_:
        print_json([event.as_json() for event in events])
        return
    for event in events:
        where = f" [{event.mission}]" if event.mission else ""
        ip = f" from {event.ip}" if event.ip else ""
        detail = f" {event.as_json()['detail']}" if event.detail else ""
        out.print(
            f"{event.id:>6} {event.at:%Y-%m-%d %H:%M:%S} {event.actor} via {event.via}: "
            f"{event.action} {event.target}{where}{ip}{detail}",
            markup=False,
        )


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False
) -> None:
    """Check every event's hash and link; exit status 1 names the first broken event."""
    verified = service.verify(settings_for(ctx, config))
    broken = verified.broken
    if json_:
        print_json({
            "events": verified.events, "head": verified.head, "intact": broken is None,
            "broken": {"id": broken.id, "problem": broken.problem} if broken else None,
        })  # fmt: skip
    elif broken is None:
        out.print(f"{verified.events} events, chain intact; head {verified.head}", markup=False)
    if broken is not None:
        err.print(
            f"error: the audit chain is broken at event {broken.id}: {broken.problem} "
            f"({verified.events} events before it hold)",
            markup=False,
        )
        raise typer.Exit(1)
