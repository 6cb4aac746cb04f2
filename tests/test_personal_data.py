"""A reader downloads what the system holds about them, from their own preferences link."""

from __future__ import annotations

import json
import warnings
from urllib.parse import urlsplit

from sqlmodel import Session, func, select
from typer.testing import CliRunner

from newsletter.mail.links import recipient_links
from newsletter.models import AuditEvent
from newsletter.subscriptions import store
from newsletter.testing.sink import LoopbackController
from newsletter.web import create_app
from tests.conftest import Instance, cli, database, load_sample

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # see tests/test_web.py
    from fastapi.testclient import TestClient

READER = "chen.hao@de-berlin.example.org"


def _events(instance: Instance) -> int:
    with database(instance) as engine, Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(AuditEvent)).one())


def test_the_preferences_link_downloads_the_reader_s_own_data(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    load_sample(runner, instance)
    cli(runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-host", "127.0.0.1",
        "--smtp-port", str(smtp_server.port))  # fmt: skip
    with database(instance) as engine, Session(engine) as session:
        key = store.find(session, READER).token_key
    _, preferences, _ = recipient_links(instance.settings, key)
    path = urlsplit(preferences).path
    before = _events(instance)
    with TestClient(create_app(instance.settings)) as browser:
        assert f"{path}/data.json" in browser.get(path).text  # the page links to it
        answer = browser.get(f"{path}/data.json")
        forged = browser.get(f"{path[:-3]}xyz/data.json")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "private, no-store"
    assert "attachment" in answer.headers["content-disposition"]
    data = json.loads(answer.text)
    assert data["subscriber"]["email"] == READER and data["subscriber"]["mission"] == "de-berlin"
    assert set(data["subscriber"]["sectors"]) == {"ai", "robotics", "software"}
    assert [(d["issue"], d["state"]) for d in data["deliveries"]] == [("2020-01", "sent")]
    assert any(h["action"] == "created" for h in data["history"])
    assert data["cooperation_requests"] == []
    assert forged.status_code != 200 and READER not in forged.text
    assert _events(instance) == before  # reading one's data changes nothing
