"""Every row owns its fate at compose time: one row's fault fails that row; an issue's fault is one error."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import multiprocessing
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter import runtime
from newsletter.config import Settings
from newsletter.content.issue_intake import sample_issue_path
from newsletter.delivery.batches import (
    Composer,
    HelperSetup,
    IssueRenderError,
    Job,
    LocalComposer,
    ProcessComposer,
)
from newsletter.delivery.campaigns import prepare_send
from newsletter.issues import get_issue
from newsletter.models import CampaignState, Delivery, DeliveryState, Subscriber, utcnow
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance, broken_templates, cli, ledger_by_email

# An address an older version stored without checking it (email-validator refuses a label that
# starts with a hyphen; IDNA cannot encode it): it has no form to send to.
LEGACY = "kjc@-使馆.中国"


def _people(runner: CliRunner, instance: Instance, count: int) -> list[str]:
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    people = [f"reader{i:03d}@example.org" for i in range(count)]
    lists = instance.dir / "lists"
    lists.mkdir()
    rows = "".join(f"{p},读者{i},{'ai' if i % 3 else ''}\n" for i, p in enumerate(people))
    (lists / "fr-paris.csv").write_text("email,name,sectors\n" + rows, encoding="utf-8")
    cli(runner, instance, "subscribers", "import", str(lists))
    return people


def _store_unchecked(settings: Settings, address: str, value: str) -> None:
    """Rewrite a stored address behind the entry points' back, as an older version could have."""
    db = runtime.open_database(settings)
    with Session(db) as session:
        row = session.exec(select(Subscriber).where(Subscriber.email == address)).one()
        row.email = value
        session.add(row)
        session.commit()
    db.dispose()


def test_a_row_that_cannot_be_composed_fails_alone(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    people = _people(runner, instance, 30)
    _store_unchecked(instance.settings, people[7], LEGACY)
    out = cli(runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-host",
              "127.0.0.1", "--smtp-port", str(smtp_server.port), "--json")  # fmt: skip
    report = json.loads(out)
    assert report["sent"] == 29 and report["failed"] == 1
    others = [p for p in people if p != people[7]]
    assert Counter(r.rcpt for r in smtp_server.handler.received) == Counter(others)
    rows = ledger_by_email(instance.settings)
    bad = rows[LEGACY]
    assert bad.state == DeliveryState.FAILED
    assert bad.reply.startswith(f"cannot compose this message: {LEGACY!r} is not a valid email")
    assert "\n" not in bad.reply
    assert {rows[p].state for p in others} == {DeliveryState.SENT}
    campaigns = json.loads(cli(runner, instance, "campaign", "list", "--json"))
    assert campaigns[0]["state"] == "finished"


def _sending_campaign(settings: Settings) -> int:
    db = runtime.open_database(settings)
    with Session(db, expire_on_commit=False) as session:
        campaign, _ = prepare_send(session, get_issue(session, "2020-01").record)
        campaign.state = CampaignState.SENDING
        session.add(campaign)
        session.commit()
    db.dispose()
    assert campaign.id is not None
    return campaign.id


def _claim(settings: Settings, campaign_id: int, *, helper: bool) -> list[Job]:
    db = runtime.open_database(settings)
    try:
        with Session(db) as session:
            ctx = runtime.issue_context(session, settings, "2020-01")
        composer: Composer
        if helper:
            setup = HelperSetup.of(db, ctx)
            assert setup is not None
            composer = ProcessComposer(setup)
        else:
            composer = LocalComposer(db, ctx)

        async def claim() -> list[Job]:
            try:
                return await composer.claim(
                    campaign_id, now=utcnow(), limit=50, worker="test-sender",
                    lease=dt.timedelta(minutes=10), preview=False,
                )  # fmt: skip
            finally:
                await composer.close()

        return asyncio.run(claim())
    finally:
        db.dispose()


@pytest.mark.parametrize("helper", [False, True], ids=["in-process", "helper"])
def test_a_composer_hands_one_row_fault_back_as_that_rows_job(
    runner: CliRunner, instance: Instance, helper: bool
) -> None:
    people = _people(runner, instance, 12)
    _store_unchecked(instance.settings, people[3], LEGACY)
    jobs = _claim(instance.settings, _sending_campaign(instance.settings), helper=helper)
    assert len(jobs) == 12
    failed = [j for j in jobs if j.error]
    assert len(failed) == 1 and failed[0].letter is None
    assert failed[0].error.startswith(f"cannot compose this message: {LEGACY!r}")
    assert sorted(j.letter.rcpt for j in jobs if j.letter) == sorted(set(people) - {people[3]})


def _rows(settings: Settings) -> list[Delivery]:
    db = runtime.open_database(settings)
    with Session(db) as session:
        rows = list(session.exec(select(Delivery)).all())
    db.dispose()
    return rows


@pytest.mark.parametrize("helper", [False, True], ids=["in-process", "helper"])
def test_an_issue_that_cannot_render_is_one_error_and_its_rows_are_released(
    runner: CliRunner, instance: Instance, tmp_path: Path, helper: bool
) -> None:
    _people(runner, instance, 9)
    templates = broken_templates(tmp_path)
    settings = instance.settings.overridden({"templates_dir": str(templates)})
    campaign_id = _sending_campaign(settings)
    with pytest.raises(IssueRenderError) as raised:
        _claim(settings, campaign_id, helper=helper)
    assert type(raised.value) is IssueRenderError
    assert raised.value.slug == "2020-01" and "digest.mjml.j2" in raised.value.reason
    assert str(raised.value).startswith("issue 2020-01 cannot be rendered: template digest.mjml.j2")
    rows = _rows(settings)
    assert len(rows) == 9
    assert {(r.state, r.lease_until, r.worker) for r in rows} == {(DeliveryState.QUEUED, None, "")}
    assert multiprocessing.active_children() == []
