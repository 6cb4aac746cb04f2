"""`bounces ingest`: delivery status notifications in, bounced subscribers out; `bounces undo`."""

from __future__ import annotations

import datetime as dt
import getpass
from pathlib import Path
from typing import Annotated

import typer

from newsletter.actors import Actor, ActorKind
from newsletter.cli.base import (
    ConfigOption,
    JsonOption,
    err,
    group,
    open_session,
    print_json,
    settings_for,
)
from newsletter.delivery.bounces import Bounce, UnreadableReport, parse_bounces, read_messages
from newsletter.models import utcnow
from newsletter.scheduling.rules import parse_instant
from newsletter.subscriptions.bounce_policy import (
    DEFAULT_SOFT_THRESHOLD,
    DEFAULT_SOFT_WINDOW,
    Applied,
    apply_reports,
    tally,
    undo_bounces,
)
from newsletter.subscriptions.lifecycle import unbounce_reason

bounces_app = group("bounces", "Read bounce reports (delivery status notifications).")

NOT_A_DSN = "not a delivery status notification"
NO_FAILURE = "reports no failed or delayed recipient"
# "staff" via "cli", as bounce undos were always audited; `Actor.cli()` once bounces get a service.
STAFF = Actor(ActorKind.STAFF, "cli")


@bounces_app.command("ingest")
def bounces_ingest(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(help="Messages (.eml), folders of .eml, mbox files or maildirs."),
    ],
    soft_threshold: Annotated[
        int,
        typer.Option(
            "--soft-threshold", min=1, help="Soft bounces within the window that disable."
        ),
    ] = DEFAULT_SOFT_THRESHOLD,
    soft_window_days: Annotated[
        int, typer.Option("--soft-window-days", min=1, help="The window for --soft-threshold.")
    ] = DEFAULT_SOFT_WINDOW.days,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Hard bounces mark the subscriber bounced; soft ones count, and too many disable.

    Only reports returning a message we sent to the address they name act ("not-ours": forged
    or someone else's, changes nobody). Other mail (auto-replies, spam) is skipped; a message
    that cannot be read is reported as unreadable and the rest still apply (exit status 0);
    reading the same reports again changes nothing.
    """
    settings = settings_for(ctx, config)
    bounces: list[tuple[str, Bounce]] = []
    skipped: list[tuple[str, str]] = []
    unreadable: list[tuple[str, str]] = []
    messages = 0
    for source, data in read_messages(paths):
        messages += 1
        try:
            found = parse_bounces(data, domain=settings.domain)
        except Exception as exc:  # one crafted or broken message never stops the others
            unreadable.append((source, _why(exc)))
            continue
        if not found:
            skipped.append((source, NOT_A_DSN if found is None else NO_FAILURE))
        bounces.extend((source, b) for b in found or ())
    with open_session(settings) as session:
        applied = apply_reports(
            session, [b for _, b in bounces], now=utcnow(), soft_threshold=soft_threshold,
            soft_window=dt.timedelta(days=soft_window_days),
        )  # fmt: skip
        session.commit()
    summary = {
        "messages": messages, **tally(applied), "skipped": len(skipped),
        "unreadable": len(unreadable),
    }  # fmt: skip
    rows = [_row(source, a) for (source, _), a in zip(bounces, applied, strict=True)]
    if json_:
        print_json({
            **summary, "bounces": rows,
            "skipped_messages": [{"source": s, "reason": r} for s, r in skipped],
            "unreadable_messages": [{"source": s, "reason": r} for s, r in unreadable],
        })  # fmt: skip
        return
    for row in rows:
        campaign = f" campaign {row['campaign_id']}" if row["campaign_id"] is not None else ""
        said = f"{row['reason']} ({row['diagnostic']})" if row["reason"] else row["diagnostic"]
        _say(
            f"{row['outcome']:>15} {row['email'] or row['recipient']} {row['kind']} "
            f"{row['status']}{campaign}: {said}"
        )
    for source, reason in skipped:
        _say(f"{'skipped':>15} {source}: {reason}")
    for source, reason in unreadable:
        _say(f"{'unreadable':>15} {source}: {reason}")
    _say(", ".join(f"{value} {key.replace('_', ' ')}" for key, value in summary.items()))


def _why(exc: Exception) -> str:
    if isinstance(exc, UnreadableReport):
        return str(exc)
    first = (str(exc).splitlines() or [""])[0][:200]
    return f"cannot be parsed ({type(exc).__name__}{': ' + first if first else ''})"


def _say(line: str) -> None:
    # One line per bounce whatever the terminal width, and the remote text shown as written.
    err.print(line, markup=False, highlight=False, soft_wrap=True)


def _row(source: str, applied: Applied) -> dict[str, object]:
    b = applied.bounce
    return {
        "source": source, "recipient": b.recipient, "email": applied.email or None,
        "kind": str(b.kind), "status": b.status, "diagnostic": b.diagnostic,
        "campaign_id": b.campaign_id, "message_id": b.message_id or None,
        "outcome": str(applied.outcome), "reason": applied.reason,
    }  # fmt: skip


@bounces_app.command("undo")
def bounces_undo(
    ctx: typer.Context,
    emails: Annotated[
        list[str] | None, typer.Argument(help="Addresses of bounced subscribers.")
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why the bounce was wrong; kept in the audit log.")
    ] = "",
    all_since: Annotated[
        str | None,
        typer.Option(
            "--all-since",
            help="Also everyone bounced at or after this ISO 8601 time with offset, "
            "such as 2026-05-04T09:00+08:00.",
        ),
    ] = None,
    matching: Annotated[
        str,
        typer.Option(
            "--matching",
            help="With --all-since: only bounces whose reason contains this text, such as "
            '"local recipient table".',
        ),
    ] = "",
    by: Annotated[
        str, typer.Option("--by", help="Who undoes it, for the audit log (default: login name).")
    ] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say who would be un-bounced; change nothing.")
    ] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Undo wrong bounces (a relay that refused everyone): back to active, audited.

    Only bounced subscribers can be un-bounced; someone who never confirmed returns to pending.
    Erased or suppressed addresses stay so. Exit status 1 when a named address was refused.
    """
    if not emails and all_since is None:
        raise typer.BadParameter("name addresses or give --all-since", param_hint="EMAILS")
    if matching and all_since is None:
        raise typer.BadParameter("--matching selects among --all-since", param_hint="--matching")
    unbounce_reason(reason)  # no reason, no work: fail before opening anything
    since = parse_instant(all_since, "--all-since") if all_since is not None else None
    settings = settings_for(ctx, config)
    with open_session(settings) as session:
        done = undo_bounces(
            session, settings.secret, emails=emails or (), since=since, matching=matching,
            reason=reason, actor=STAFF, by=by.strip() or _login(),
        )  # fmt: skip
        if dry_run:
            session.rollback()
        else:
            session.commit()
    undone = [d for d in done if d.status]
    refused = [d for d in done if d.refused]
    if json_:
        print_json({
            "dry_run": dry_run, "unbounced": len(undone), "refused": len(refused),
            "subscribers": [{"email": d.email, "status": d.status or None,
                             "refused": d.refused or None} for d in done],
        })  # fmt: skip
    else:
        verb = "would return" if dry_run else "returned"
        for d in undone:
            _say(f"{'un-bounced':>15} {d.email}: {verb} to {d.status}")
        for d in refused:
            _say(f"{'refused':>15} {d.email}: {d.refused}")
        _say(
            f"{len(undone)} un-bounced, {len(refused)} refused" + (" (dry run)" if dry_run else "")
        )
    if refused:
        raise typer.Exit(1)


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in a bare container
        return ""
