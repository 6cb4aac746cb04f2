"""Who may join: `[web] allowed_domains` and `[web] approval = "mission"`, through the real web
app, a real SMTP server and the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import re
import warnings
from email.message import EmailMessage
from typing import Any

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter.config import Settings
from newsletter.content.issue_intake import sample_issue_path
from newsletter.errors import ConfigError
from newsletter.models import Subscriber
from newsletter.testing.sink import LoopbackController
from newsletter.web import create_app
from tests.conftest import Instance, cli, database, fails, invoke

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

FORM = {"name": "王芳", "embassy": "de-berlin", "sectors": ["ai"], "language": "zh"}


def _settings(instance: Instance, server: LoopbackController, **web: object) -> Settings:
    changes: dict[str, object] = {"transport": "smtp", "smtp.host": "127.0.0.1",
                                  "smtp.port": server.port}  # fmt: skip
    changes.update({f"web.{key}": value for key, value in web.items()})
    return instance.settings.overridden(changes)


@pytest.fixture
def server(smtp_server: LoopbackController) -> LoopbackController:
    return smtp_server


def _sign_up(client: TestClient, address: str) -> Any:
    form = client.get("/subscribe")
    found = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert found, form.text
    return client.post("/subscribe", data={**FORM, "email": address, "csrf": found.group(1)})


def _mail_to(server: LoopbackController, address: str) -> list[EmailMessage]:
    return [r.parsed() for r in server.handler.received if r.rcpt == address]


def _stored(instance: Instance, address: str) -> Subscriber | None:
    with database(instance) as engine, Session(engine) as session:
        return session.exec(select(Subscriber).where(Subscriber.email == address)).first()


def _confirm_path(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    found = re.search(r"https?://\S+(/confirm/\S+)", str(body.get_content()))
    assert found
    return found.group(1)


def _post_form(client: TestClient, path: str) -> Any:
    page = client.get(path)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return client.post(path, data={"csrf": found.group(1)})


def _json(runner: CliRunner, instance: Instance, *args: str) -> Any:
    return json.loads(cli(runner, instance, *args, "--json"))


def test_a_sign_up_from_outside_the_allowed_domains_gets_the_same_answer_and_no_mail(
    instance: Instance, server: LoopbackController
) -> None:
    settings = _settings(instance, server, allowed_domains=("example.org",))
    with TestClient(create_app(settings)) as client:
        allowed = _sign_up(client, "li.hua@de-berlin.example.org")  # a subdomain counts
        outside = _sign_up(client, "li.hua@gmail.example.net")
        mixed_case = _sign_up(client, "Wang@Example.ORG")
    assert allowed.status_code == outside.status_code == 200
    assert outside.content == allowed.content == mixed_case.content  # the page has no token
    assert b"example.org" not in outside.content  # no domain list revealed
    skip = {"date", "set-cookie"}
    assert {k: v for k, v in outside.headers.items() if k not in skip} == {
        k: v for k, v in allowed.headers.items() if k not in skip
    }
    assert [r.rcpt for r in server.handler.received] == [
        "li.hua@de-berlin.example.org",
        "wang@example.org",
    ]
    assert _mail_to(server, "li.hua@gmail.example.net") == []
    assert _stored(instance, "li.hua@gmail.example.net") is None  # nothing kept of an outsider


def test_an_allowed_domain_that_is_not_a_domain_is_refused_with_the_setting_named(
    instance: Instance,
) -> None:
    with pytest.raises((ConfigError, ValueError), match="allowed_domains|mail domain"):
        instance.settings.overridden({"web.allowed_domains": ["not a domain"]})


def test_a_confirmed_sign_up_waits_for_the_mission_then_is_approved_or_rejected(
    runner: CliRunner, instance: Instance, server: LoopbackController
) -> None:
    settings = _settings(instance, server, approval="mission")
    first, second = "li.hua@de-berlin.example.org", "zhang.wei@de-berlin.example.org"
    with TestClient(create_app(settings)) as client:
        for address in (first, second):
            assert _sign_up(client, address).status_code == 200
            [mail] = _mail_to(server, address)
            confirm = _confirm_path(mail)
            assert _stored(instance, address).status == "pending"  # type: ignore[union-attr]
            done = _post_form(client, confirm)
            assert done.status_code == 200 and "订阅待审核" in done.text, done.text
            again = client.get(confirm)  # the link opened again: still waiting, nothing changed
            assert "订阅待审核" in again.text
            # Signing up again while waiting sends nothing: they have confirmed already.
            assert _sign_up(client, address).status_code == 200
            assert len(_mail_to(server, address)) == 1

    waiting = _json(runner, instance, "subscribers", "pending")
    assert [(w["email"], w["embassy"], w["days_waiting"]) for w in waiting] == [
        (first, "de-berlin", 0),
        (second, "de-berlin", 0),
    ]
    assert _json(runner, instance, "subscribers", "pending", "--embassy", "fr-paris") == []
    assert _json(runner, instance, "subscribers", "pending", "--older-than", "3") == []
    with database(instance) as engine, Session(engine) as session:  # a week has passed
        row = session.exec(select(Subscriber).where(Subscriber.email == first)).one()
        row.status_changed_at = row.status_changed_at - dt.timedelta(days=7)
        session.add(row)
        session.commit()
    reminder = _json(runner, instance, "subscribers", "pending", "--older-than", "3")
    assert [(w["email"], w["days_waiting"]) for w in reminder] == [(first, 7)]

    # Nobody waiting receives an issue.
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    before = len(server.handler.received)
    cli(runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-host", "127.0.0.1",
        "--smtp-port", str(server.port))  # fmt: skip
    assert {r.rcpt for r in server.handler.received[before:]}.isdisjoint({first, second})

    cli(runner, instance, "subscribers", "approve", first)
    cli(runner, instance, "subscribers", "reject", second, "--reason", "not a mission address")
    shown = _json(runner, instance, "subscribers", "show", first)
    assert shown["status"] == "active"
    assert shown["history"][-1]["detail"] == "sign-up approved"
    assert shown["history"][-1]["actor"].startswith("cli:")
    refused = _json(runner, instance, "subscribers", "show", second)
    assert refused["status"] == "unsubscribed"
    assert refused["history"][-1]["detail"] == "sign-up rejected: not a mission address"
    assert _json(runner, instance, "subscribers", "pending") == []
    # Approving again says so; rejecting someone not waiting names what to do.
    assert "approved already" in invoke_note(runner, instance, "subscribers", "approve", first)
    error = fails(runner, instance, "subscribers", "reject", first)
    assert "is active, not awaiting approval" in error and "subscribers pending" in error
    error = fails(runner, instance, "subscribers", "approve", "nobody@de-berlin.example.org")
    assert "nobody@de-berlin.example.org" in error
    assert "--older-than" in fails(runner, instance, "subscribers", "pending", "--older-than", "-1")


def invoke_note(runner: CliRunner, instance: Instance, *args: str) -> str:
    """What a succeeding command said on stderr."""
    result = invoke(runner, instance, *args)
    assert result.exit_code == 0, result.output
    return result.stderr


def test_get_on_the_sign_up_and_confirm_pages_changes_nothing(
    instance: Instance, server: LoopbackController
) -> None:
    settings = _settings(instance, server, approval="mission")
    with TestClient(create_app(settings)) as client:
        _sign_up(client, "li.hua@de-berlin.example.org")
        [mail] = _mail_to(server, "li.hua@de-berlin.example.org")
        for _ in range(2):
            client.get(_confirm_path(mail))
            client.get("/subscribe")
    assert _stored(instance, "li.hua@de-berlin.example.org").status == "pending"  # type: ignore[union-attr]
