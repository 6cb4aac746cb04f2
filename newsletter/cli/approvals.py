"""`campaign request|requests|approve|reject|withdraw`: four-eyes sign-off (签发) from a shell.

The shell user is the actor (`cli:<user>`): the same person may not request and approve.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from newsletter.actors import Actor
from newsletter.cli.base import ConfigOption, JsonOption, err, out, print_json, settings_for
from newsletter.cli.campaigns import campaign_app
from newsletter.services import approvals as service

RequestId = Annotated[
    int, typer.Argument(help="Request id (see `newsletter campaign requests`).")
]  # fmt: skip


@campaign_app.command("request")
def campaign_request(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="The issue (see `newsletter issue list`).")],
    local: Annotated[
        str | None, typer.Option("--local", help="HH:MM on each mission's own clock.")
    ] = None,
    date: Annotated[str | None, typer.Option("--date", help="YYYY-MM-DD for --local.")] = None,
    working_days: Annotated[
        bool, typer.Option("--working-days", help="A closed mission gets its next working day.")
    ] = False,
    at: Annotated[
        str | None, typer.Option("--at", help="One absolute time with offset (ISO 8601).")
    ] = None,
    now: Annotated[bool, typer.Option("--now", help="Send as soon as it is approved.")] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Ask for an issue to be sent on a schedule; someone else approves it (four eyes)."""
    settings = settings_for(ctx, config)
    if not (now or local or date or working_days or at):
        raise typer.BadParameter("choose when: --now, --local HH:MM [--date D] or --at ISO")
    spec = service.schedule_spec(
        settings, now=now, local=local, date=date, working_days=working_days, at=at
    )
    made = service.request_campaign(settings, slug, spec, actor=Actor.cli())
    if json_:
        print_json(made.as_dict())
        return
    err.print(
        f"request {made.id}: send {slug} {spec.described}; waiting for sign-off by someone "
        f"else (`newsletter campaign approve {made.id}`)",
        markup=False,
    )


@campaign_app.command("requests")
def campaign_requests(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option("--state", help="Only requests in this state (requested, ...).")
    ] = None,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Campaign requests, newest first, with who asked, who decided and the campaign made."""
    views = service.list_requests(settings_for(ctx, config), states=(state,) if state else ())
    if json_:
        print_json([v.as_dict() for v in views])
        return
    table = Table("id", "issue", "state", "schedule", "requested by", "decided by", "campaign",
                  "comment")  # fmt: skip
    for v in views:
        table.add_row(
            str(v.id), v.issue, v.state, v.schedule.described, v.requested_by, v.decided_by,
            str(v.campaign or ""), v.comment,
        )  # fmt: skip
    out.print(table)


@campaign_app.command("approve")
def campaign_approve(
    ctx: typer.Context,
    request_id: RequestId,
    comment: Annotated[str, typer.Option("--comment", help="A note kept with the sign-off.")] = "",
    override: Annotated[
        str,
        typer.Option("--override", help="Sign off alone (four eyes waived): the reason, audited."),
    ] = "",
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Sign a request off: its campaign is scheduled (or queued to send now)."""
    done = service.approve(
        settings_for(ctx, config), request_id, actor=Actor.cli(), comment=comment,
        override=override,
    )  # fmt: skip
    if json_:
        print_json(done.as_dict())
        return
    err.print(
        f"request {done.id} approved: campaign {done.campaign} for {done.issue}, "
        f"{done.schedule.described}; `newsletter campaign status {done.campaign}` follows it",
        markup=False,
    )


@campaign_app.command("reject")
def campaign_reject(
    ctx: typer.Context,
    request_id: RequestId,
    comment: Annotated[str, typer.Option("--comment", help="Why (required).")] = "",
    config: ConfigOption = None,
) -> None:
    """Turn a request down, saying why; nothing is scheduled."""
    done = service.reject(settings_for(ctx, config), request_id, actor=Actor.cli(), comment=comment)
    err.print(f"request {done.id} rejected", markup=False)


@campaign_app.command("withdraw")
def campaign_withdraw(
    ctx: typer.Context, request_id: RequestId, config: ConfigOption = None
) -> None:
    """Take back one's own request before anyone decided."""
    done = service.withdraw(settings_for(ctx, config), request_id, actor=Actor.cli())
    err.print(f"request {done.id} withdrawn", markup=False)
