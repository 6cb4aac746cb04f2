"""Staff accounts from the shell: add, list, grant, disable, reset-2fa, on SQLite and PostgreSQL."""

from __future__ import annotations

import getpass
import json
from typing import Any

import pyotp
import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner, Result

from newsletter import credentials
from newsletter.actors import Scope
from newsletter.cli import app
from newsletter.models import StaffGrant, StaffUser
from newsletter.roles import Grant, Permission, Role, StaffError, can, check_grants, scope
from tests.conftest import Instance, cli, database, fails

PASSWORD = "correct horse battery staple"


def invoke(runner: CliRunner, instance: Instance, *args: str, input: str = "") -> Result:
    """`newsletter --config <instance> ARGS...` with `input` on standard input."""
    return runner.invoke(app, ["--config", str(instance.config), *args], input=input)


def _add(runner: CliRunner, instance: Instance, email: str, *args: str) -> dict[str, Any]:
    result = invoke(
        runner, instance, "staff", "add", email, *args, "--password-stdin", "--json",
        input=f"{PASSWORD}\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def _people(runner: CliRunner, instance: Instance) -> list[dict[str, Any]]:
    return list(json.loads(cli(runner, instance, "staff", "list", "--json")))


def _events(runner: CliRunner, instance: Instance) -> list[dict[str, Any]]:
    return list(json.loads(cli(runner, instance, "audit", "list", "--json")))


def test_add_prints_the_enrolment_once_and_stores_only_hashes_and_sealed_secrets(
    runner: CliRunner, instance: Instance
) -> None:
    shown = _add(runner, instance, "Li.Wei@Example.org", "--role", "editor", "--name", "李伟")
    assert shown["email"] == "li.wei@example.org"
    assert (shown["role"], shown["scope"]) == ("editor", ["*"])
    # The URI an authenticator app scans carries the same secret, for this account.
    parsed = pyotp.parse_uri(shown["otpauth_uri"])
    assert isinstance(parsed, pyotp.TOTP) and parsed.secret == shown["totp_secret"]
    assert "li.wei%40example.org" in shown["otpauth_uri"]
    assert len(shown["recovery_codes"]) == 10

    (person,) = _people(runner, instance)
    assert person | {"created_at": None} == {
        "email": "li.wei@example.org", "name": "李伟", "status": "invited", "role": "editor",
        "scope": ["*"], "created_at": None, "last_login_at": None,
    }  # fmt: skip
    assert "totp_secret" not in person
    with database(instance) as engine, Session(engine) as session:
        user = session.exec(select(StaffUser)).one()
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert shown["totp_secret"] not in user.totp_secret
    assert credentials.unseal(instance.settings.secret, user.totp_secret) == shown["totp_secret"]
    assert not set(shown["recovery_codes"]) & set(user.recovery_codes)


def test_staff_changes_are_audited_as_the_shell_user(runner: CliRunner, instance: Instance) -> None:
    _add(runner, instance, "li@example.org", "--role", "editor")
    cli(runner, instance, "staff", "grant", "li@example.org", "--role", "publisher")
    cli(runner, instance, "staff", "reset-2fa", "li@example.org", "--json")
    cli(runner, instance, "staff", "disable", "li@example.org")
    events = _events(runner, instance)
    assert [e["action"] for e in events] == [
        "staff.disable", "staff.reset-2fa", "staff.grant", "staff.add",
    ]  # fmt: skip
    assert {e["actor"] for e in events} == {f"cli:{getpass.getuser()}"}
    assert {e["target"] for e in events} == {"staff:li@example.org"}
    assert events[2]["detail"] == {"before": ["editor@*"], "after": ["publisher@*"]}
    (person,) = _people(runner, instance)
    assert (person["status"], person["role"]) == ("disabled", "publisher")
    assert "chain intact" in cli(runner, instance, "audit", "verify")


def test_grant_replaces_the_grants_and_a_liaison_gets_named_missions(
    runner: CliRunner, instance: Instance
) -> None:
    shown = _add(
        runner, instance, "wang@example.org", "--role", "liaison", "--scope", "de-berlin",
        "--scope", "fr-paris",
    )  # fmt: skip
    assert shown["scope"] == ["de-berlin", "fr-paris"]
    cli(runner, instance, "staff", "grant", "wang@example.org", "--role", "list-manager",
        "--scope", "de-berlin")  # fmt: skip
    (person,) = _people(runner, instance)
    assert (person["role"], person["scope"]) == ("list-manager", ["de-berlin"])
    with database(instance) as engine, Session(engine) as session:
        rows = session.exec(select(StaffGrant)).all()
    assert [(r.role, r.mission) for r in rows] == [("list-manager", "de-berlin")]


def test_reset_2fa_gives_a_new_secret_and_invites_again(
    runner: CliRunner, instance: Instance
) -> None:
    first = _add(runner, instance, "li@example.org", "--role", "editor")
    again = json.loads(cli(runner, instance, "staff", "reset-2fa", "li@example.org", "--json"))
    assert again["totp_secret"] != first["totp_secret"]
    assert not set(again["recovery_codes"]) & set(first["recovery_codes"])
    assert _people(runner, instance)[0]["status"] == "invited"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("--role", "liason"), PASSWORD, "unknown role 'liason'; did you mean 'liaison'?"),
        (("--role", "editor", "--scope", "de-berlinn"), PASSWORD,
         "unknown mission 'de-berlinn'; did you mean 'de-berlin'?"),
        (("--role", "liaison"), PASSWORD, "a liaison works for named missions: give --scope"),
        (("--role", "editor"), "", "the password is empty"),
        (("--role", "editor"), "short", "at least 12 characters"),
        (("--role", "editor"), "aaaaaaaaaaaaaaaa", "at least 5 different"),
        (("--role", "editor"), "my name is newcomer!", "contains the e-mail address"),
    ],
)  # fmt: skip
def test_bad_input_names_what_to_fix_and_stores_nothing(
    runner: CliRunner, instance: Instance, args: tuple[str, ...], stdin: str, message: str
) -> None:
    result = invoke(
        runner, instance, "staff", "add", "newcomer@example.org", *args, "--password-stdin",
        input=f"{stdin}\n",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert result.stderr.startswith("error: ")
    assert _people(runner, instance) == []
    assert _events(runner, instance) == []


def test_a_duplicate_the_missing_password_flag_and_unknown_people_are_refused(
    runner: CliRunner, instance: Instance
) -> None:
    _add(runner, instance, "li@example.org", "--role", "editor")
    result = invoke(
        runner, instance, "staff", "add", "LI@example.org", "--role", "admin", "--password-stdin",
        input=f"{PASSWORD}\n",
    )  # fmt: skip
    assert result.exit_code == 1 and "li@example.org already has an account" in result.stderr
    no_flag = fails(runner, instance, "staff", "add", "x@example.org", "--role", "admin")
    assert "--password-stdin" in no_flag
    missing = fails(runner, instance, "staff", "disable", "nobody@example.org")
    assert "staff member 'nobody@example.org' not found" in missing
    wrong = fails(runner, instance, "staff", "grant", "li@example.org", "--role", "boss")
    assert "unknown role 'boss'" in wrong
    (person,) = _people(runner, instance)
    assert (person["role"], person["status"]) == ("editor", "invited")
    assert len(_events(runner, instance)) == 1


# --- The permission table (pure) ----------------------------------------------------------------


def test_the_permission_table_of_console_section_2() -> None:
    editor, publisher = (Grant(Role.EDITOR),), (Grant(Role.PUBLISHER),)
    berlin = (Grant(Role.LIAISON, "de-berlin"),)
    assert can(editor, Permission.EDIT_ISSUES) and not can(editor, Permission.APPROVE_CAMPAIGN)
    assert can(publisher, Permission.APPROVE_CAMPAIGN)
    assert not can(publisher, Permission.EDIT_SUBSCRIBERS)
    assert can(berlin, Permission.READ_SUBSCRIBERS, "de-berlin")
    assert not can(berlin, Permission.READ_SUBSCRIBERS, "fr-paris")
    assert not can(berlin, Permission.ERASE, "de-berlin")
    assert not can(berlin, Permission.HANDOVER, "de-berlin")  # a request only
    assert not can((Grant(Role.AUDITOR),), Permission.EDIT_SUBSCRIBERS)
    assert all(can((Grant(Role.ADMIN),), p, "fr-paris") for p in Permission)
    assert scope(berlin, Permission.READ_SUBSCRIBERS) == Scope.of({"de-berlin"})
    assert scope(berlin, Permission.BOUNCES) == Scope.of(())
    assert scope(berlin + editor, Permission.REPORTS) == Scope.all()
    assert not scope(berlin, Permission.READ_SUBSCRIBERS).allows("fr-paris")


def test_grants_are_checked_before_anything_is_stored() -> None:
    assert check_grants(Role.EDITOR, []) == (Grant(Role.EDITOR, "*"),)
    assert check_grants(Role.LIAISON, ["de-berlin", "de-berlin"]) == (
        Grant(Role.LIAISON, "de-berlin"),
    )
    with pytest.raises(StaffError, match="liaison"):
        check_grants(Role.LIAISON, ["*"])
