"""`staff add|list|grant|disable|reset-2fa`: console accounts from the shell, as the OS user."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from newsletter.actors import Actor
from newsletter.cli.base import ConfigOption, JsonOption, err, group, out, print_json, settings_for
from newsletter.roles import StaffError
from newsletter.services import staff as service

staff_app = group("staff", "Console accounts: roles, missions, second factor.")

RoleOption = Annotated[
    str,
    typer.Option(
        "--role",
        help="admin, publisher, editor, list-manager, liaison or auditor.",
        show_default=False,
    ),
]
ScopeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--scope",
        help="A mission code the role covers (repeat for several; default: all missions).",
    ),
]


def _enrolment(enrolled: service.Enrolled, json_: bool) -> None:
    if json_:
        print_json(enrolled.as_json())
        return
    missions = ", ".join(g.mission for g in enrolled.grants)
    out.print(f"{enrolled.email}: {enrolled.grants[0].role} for {missions}", markup=False)
    out.print(f"TOTP secret (shown once): {enrolled.enrolment.totp_secret}", markup=False)
    out.print(f"otpauth URI: {enrolled.enrolment.otpauth_uri}", markup=False)
    out.print("recovery codes (shown once, keep them offline):", markup=False)
    for code in enrolled.enrolment.recovery_codes:
        out.print(f"  {code}", markup=False)
    err.print(
        "the account is invited: at the first console login it scans the QR code shown there "
        "(or enters the secret) and confirms with a code",
        markup=False,
    )


def _read_password() -> str:
    # One line: a trailing newline from `echo` or a here-string is not part of the password.
    return sys.stdin.readline().rstrip("\r\n")


@staff_app.command("add")
def staff_add(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The staff member's e-mail address (the login).")],
    role: RoleOption,
    scope: ScopeOption = None,
    name: Annotated[str, typer.Option("--name", help="Name shown in the console.")] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Add a console account (invited until its second factor is enrolled)."""
    if not password_stdin:
        raise StaffError(
            "give the password on standard input with --password-stdin "
            "(never as an argument: it would stay in the shell history)"
        )
    enrolled = service.add_staff(
        settings_for(ctx, config), email, role=role, scope=scope or (), name=name,
        password=_read_password(), actor=Actor.cli(),
    )  # fmt: skip
    _enrolment(enrolled, json_)


@staff_app.command("list")
def staff_list(ctx: typer.Context, config: ConfigOption = None, json_: JsonOption = False) -> None:
    """Every account with its status, role and missions."""
    people = service.list_staff(settings_for(ctx, config))
    if json_:
        print_json([person.as_json() for person in people])
        return
    for person in people:
        roles = ", ".join(person.roles) or "-"
        out.print(
            f"{person.email:<36} {person.status:<9} {roles:<14} {', '.join(person.scope) or '-'}"
            + (f"  {person.name}" if person.name else ""),
            markup=False,
        )
    if not people:
        err.print("no staff accounts yet; add one with `newsletter staff add`", markup=False)


@staff_app.command("grant")
def staff_grant(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The staff member's address.")],
    role: RoleOption,
    scope: ScopeOption = None,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Give a role over missions, replacing the grants held before; open sessions end."""
    person = service.grant(
        settings_for(ctx, config), email, role=role, scope=scope or (), actor=Actor.cli()
    )
    _done(person, "granted", json_)


@staff_app.command("disable")
def staff_disable(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The staff member's address.")],
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """No more console logins for this account; its open sessions end now."""
    _done(service.disable(settings_for(ctx, config), email, actor=Actor.cli()), "disabled", json_)


@staff_app.command("reset-2fa")
def staff_reset_2fa(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The staff member's address.")],
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """A new TOTP secret and recovery codes (shown once); the old ones stop working."""
    _enrolment(service.reset_2fa(settings_for(ctx, config), email, actor=Actor.cli()), json_)


def _done(person: service.StaffView, verb: str, json_: bool) -> None:
    if json_:
        print_json(person.as_json())
        return
    err.print(
        f"{verb} {person.email}: {person.status}, {', '.join(person.roles)} for "
        f"{', '.join(person.scope)}",
        markup=False,
    )
