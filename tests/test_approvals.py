"""Four-eyes sign-off (签发) of campaigns: the service and its CLI doors, on SQLite and PostgreSQL,
with the real scheduler's plans and a real send to the SMTP sink."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from newsletter import runtime
from newsletter.actors import Actor, Scope
from newsletter.content.issue_intake import sample_issue_path
from newsletter.models import AdminEvent
from newsletter.scheduling import plans
from newsletter.services import approvals, campaigns, issues, scheduling
from newsletter.services.approvals import RequestStateError, SignOffError
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance, cli, database, fails, load_sample, send_sample

SLUG = "2020-01"
EDITOR = Actor.staff("li.wei@example.org")
PUBLISHER = Actor.staff("wang.fang@example.org")


def _tomorrow() -> str:
    return (dt.date.today() + dt.timedelta(days=2)).isoformat()


def _actions(instance: Instance) -> list[tuple[str, str, dict[str, object]]]:
    with database(instance) as engine, Session(engine) as session:
        rows = session.exec(select(AdminEvent).order_by(col(AdminEvent.id))).all()
        return [
            (f"{r.actor_kind}:{r.actor_id}", r.action, json.loads(r.detail or "{}"))
            for r in rows
            if r.action.startswith("campaign.")
        ]


def _edit_issue(instance: Instance, actor: Actor) -> None:
    text = sample_issue_path().read_text(encoding="utf-8")
    edited = text.replace("title_en: China S&T Innovation Express", "title_en: China S&T Express")
    assert edited != text
    issues.import_issue(instance.settings, edited.encode(), source="2020-01.yaml", actor=actor)


@pytest.fixture
def sample(runner: CliRunner, instance: Instance) -> set[str]:
    return load_sample(runner, instance)


def test_an_editor_requests_another_approves_and_the_campaign_is_scheduled(
    runner: CliRunner, instance: Instance, sample: set[str]
) -> None:
    settings = instance.settings
    spec = approvals.schedule_spec(settings, local="09:00", date=_tomorrow(), working_days=False)
    made = approvals.request_campaign(settings, SLUG, spec, actor=EDITOR)
    assert made.state == "requested" and made.campaign is None
    # Nothing is scheduled before the sign-off.
    assert json.loads(cli(runner, instance, "schedule", "list", "--json")) == []
    assert campaigns.list_campaigns(settings) == []

    done = approvals.approve(settings, made.id, actor=PUBLISHER, comment="可以发 fine")
    assert done.state == "approved" and done.decided_by == PUBLISHER.label
    assert done.campaign is not None
    plans = json.loads(cli(runner, instance, "schedule", "list", "--json"))
    assert plans and {p["campaign"] for p in plans} == {done.campaign}
    assert all(p["next_run_local"][11:16] == "09:00" for p in plans)
    assert sum(p["recipients"] for p in plans) == len(sample)
    assert campaigns.campaign_status(settings, done.campaign).state == "scheduled"

    listed = json.loads(cli(runner, instance, "campaign", "requests", "--json"))
    assert [(r["id"], r["state"], r["campaign"]) for r in listed] == [
        (made.id, "approved", done.campaign)
    ]
    steps = [(who, action) for who, action, _ in _actions(instance)]
    assert steps == [(EDITOR.label, "campaign.request"), (PUBLISHER.label, "campaign.approve")]
    assert cli(runner, instance, "audit", "verify") is not None


def test_the_requester_cannot_approve_their_own_and_an_admin_override_is_audited(
    instance: Instance, sample: set[str]
) -> None:
    settings = instance.settings
    made = approvals.request_campaign(
        settings, SLUG, approvals.schedule_spec(settings, now=True), actor=EDITOR
    )
    with pytest.raises(SignOffError, match="someone else must approve"):
        approvals.approve(settings, made.id, actor=EDITOR)
    assert approvals.get_request(settings, made.id).state == "requested"
    assert campaigns.list_campaigns(settings) == []
    refused = [(w, a) for w, a, _ in _actions(instance) if a == "campaign.approve-refused"]
    assert refused == [(EDITOR.label, "campaign.approve-refused")]

    done = approvals.approve(settings, made.id, actor=EDITOR, override="publisher away, 部长同意")
    assert done.state == "approved" and done.override == "publisher away, 部长同意"
    [(_, _, detail)] = [e for e in _actions(instance) if e[1] == "campaign.approve"]
    assert detail["override"] == "publisher away, 部长同意"


def test_the_issues_last_editor_cannot_approve(instance: Instance, sample: set[str]) -> None:
    settings = instance.settings
    # The publisher corrects the issue in its YAML editor (the console's edit service)…
    source = sample_issue_path().read_text(encoding="utf-8")
    edited = source.replace("title_en: China S&T Innovation Express", "title_en: Corrected")
    issues.save_issue_yaml(settings, SLUG, edited, actor=PUBLISHER)
    # …then the editor asks for it to be sent: the publisher may not sign off their own text.
    made = approvals.request_campaign(
        settings, SLUG, approvals.schedule_spec(settings, now=True), actor=EDITOR
    )
    with pytest.raises(SignOffError, match="last edited issue 2020-01"):
        approvals.approve(settings, made.id, actor=PUBLISHER)
    third = Actor.staff("zhao.lei@example.org")
    assert approvals.approve(settings, made.id, actor=third).state == "approved"


def test_whoever_last_imported_the_issue_cannot_approve(
    instance: Instance, sample: set[str]
) -> None:
    settings = instance.settings
    _edit_issue(instance, PUBLISHER)  # a re-import of the corrected file is a change too
    made = approvals.request_campaign(
        settings, SLUG, approvals.schedule_spec(settings, now=True), actor=EDITOR
    )
    with pytest.raises(SignOffError, match="last edited issue 2020-01"):
        approvals.approve(settings, made.id, actor=PUBLISHER)


def test_one_person_may_sign_off_when_a_second_approver_is_not_required(
    instance: Instance, sample: set[str]
) -> None:
    settings = instance.settings.overridden({"admin.require_second_approver": False})
    made = approvals.request_campaign(
        settings, SLUG, approvals.schedule_spec(settings, now=True), actor=EDITOR
    )
    assert approvals.approve(settings, made.id, actor=EDITOR).state == "approved"


def test_an_edit_after_approval_voids_it_and_nothing_is_sent(
    instance: Instance, sample: set[str], smtp_server: LoopbackController
) -> None:
    settings = instance.settings
    spec = approvals.schedule_spec(settings, local="09:00", date=_tomorrow())
    made = approvals.request_campaign(settings, SLUG, spec, actor=EDITOR)
    done = approvals.approve(settings, made.id, actor=PUBLISHER)
    assert done.campaign is not None

    _edit_issue(instance, EDITOR)
    assert approvals.get_request(settings, made.id).state == "void"
    status = campaigns.campaign_status(settings, done.campaign)
    assert status.state == "cancelled" and "changed after its sign-off" in status.reason
    report = campaigns.campaign_report(settings, done.campaign, scope=Scope.all())
    assert {r.state for r in report.recipients} == {"skipped"}
    void = [(w, d) for w, a, d in _actions(instance) if a == "campaign.request-void"]
    assert void == [("system:sign-off", {"request": made.id, "was": "approved",
                                          "campaign": done.campaign, "skipped": len(sample)})]  # fmt: skip

    # The scheduler firing the plans at their time sends nothing: the campaign is cancelled.
    smtp = settings.overridden(
        {"transport": "smtp", "smtp.host": "127.0.0.1", "smtp.port": smtp_server.port}
    )
    fire_at = max(p.next_run_utc for p in scheduling.list_plans(settings)) + dt.timedelta(seconds=1)
    db = runtime.open_database(settings)
    try:
        with Session(db) as session:
            for plan in scheduling.list_plans(settings, db=db):
                plans.fire_plan(session, plan.id, fire_at)
            session.commit()
    finally:
        db.dispose()
    report_after = send_sample(smtp, prepare=False)
    assert report_after.sent == 0 and smtp_server.handler.received == []
    with pytest.raises(RequestStateError, match="is void"):
        approvals.approve(settings, made.id, actor=PUBLISHER)


def test_a_request_of_text_since_changed_cannot_be_approved(
    instance: Instance, sample: set[str]
) -> None:
    settings = instance.settings
    made = approvals.request_campaign(
        settings, SLUG, approvals.schedule_spec(settings, now=True), actor=EDITOR
    )
    _edit_issue(instance, Actor.staff("zhao.lei@example.org"))
    with pytest.raises(RequestStateError, match="void"):
        approvals.approve(settings, made.id, actor=PUBLISHER)
    assert campaigns.list_campaigns(settings) == []
    # Asked again for the new text, it goes through.
    again = approvals.request_campaign(
        settings, SLUG, approvals.schedule_spec(settings, now=True), actor=EDITOR
    )
    assert approvals.approve(settings, again.id, actor=PUBLISHER).state == "approved"


def test_a_real_send_after_approval_reaches_each_active_subscriber_once(
    instance: Instance, sample: set[str], smtp_server: LoopbackController
) -> None:
    settings = instance.settings.overridden(
        {"transport": "smtp", "smtp.host": "127.0.0.1", "smtp.port": smtp_server.port}
    )
    made = approvals.request_campaign(
        settings, SLUG, approvals.schedule_spec(settings, now=True), actor=EDITOR
    )
    done = approvals.approve(settings, made.id, actor=PUBLISHER)
    assert done.campaign is not None
    assert campaigns.campaign_status(settings, done.campaign).state == "sending"
    report = send_sample(settings, prepare=False)  # as the worker sends a prepared campaign
    received = [m.rcpt for m in smtp_server.handler.received]
    assert sorted(received) == sorted(sample) and report.sent == len(sample)
    assert send_sample(settings, prepare=False).sent == 0
    assert len(smtp_server.handler.received) == len(sample)


def test_reject_needs_a_reason_and_withdraw_is_the_requesters_own(
    instance: Instance, sample: set[str]
) -> None:
    settings = instance.settings
    spec = approvals.schedule_spec(settings, now=True)
    made = approvals.request_campaign(settings, SLUG, spec, actor=EDITOR)
    with pytest.raises(SignOffError, match="already waits for sign-off in request"):
        approvals.request_campaign(settings, SLUG, spec, actor=EDITOR)
    with pytest.raises(SignOffError, match="give a comment"):
        approvals.reject(settings, made.id, actor=PUBLISHER, comment=" ")
    with pytest.raises(SignOffError, match="may withdraw it"):
        approvals.withdraw(settings, made.id, actor=PUBLISHER)
    rejected = approvals.reject(settings, made.id, actor=PUBLISHER, comment="标题有误 title wrong")
    assert (rejected.state, rejected.comment) == ("rejected", "标题有误 title wrong")
    with pytest.raises(RequestStateError, match="is rejected"):
        approvals.approve(settings, made.id, actor=PUBLISHER)
    second = approvals.request_campaign(settings, SLUG, spec, actor=EDITOR)
    assert approvals.withdraw(settings, second.id, actor=EDITOR).state == "cancelled"
    assert campaigns.list_campaigns(settings) == []


def test_the_cli_requests_lists_refuses_self_approval_approves_and_rejects(
    runner: CliRunner, instance: Instance, sample: set[str]
) -> None:
    made = json.loads(cli(runner, instance, "campaign", "request", SLUG, "--local", "09:00",
                          "--date", _tomorrow(), "--working-days", "--json"))  # fmt: skip
    assert made["state"] == "requested"
    assert made["schedule"] == {"kind": "local", "local": "09:00", "date": _tomorrow(),
                                "working_days": True, "at": None}  # fmt: skip
    # The same shell user asked: four eyes refuse it.
    assert "someone else must approve" in fails(runner, instance, "campaign", "approve",
                                                str(made["id"]))  # fmt: skip
    assert "not found" in fails(runner, instance, "campaign", "approve", "999")
    assert "give a comment" in fails(runner, instance, "campaign", "reject", str(made["id"]))
    table = cli(runner, instance, "campaign", "requests")
    assert "requested" in table and SLUG in table
    cli(runner, instance, "campaign", "approve", str(made["id"]), "--override", "test office")
    [row] = json.loads(cli(runner, instance, "campaign", "requests", "--json"))
    assert row["state"] == "approved" and row["override"] == "test office" and row["campaign"]

    bad = fails(runner, instance, "campaign", "request", SLUG, "--local", "25:00")
    assert "--local" in bad
    other = approvals.request_campaign(
        instance.settings, SLUG, approvals.schedule_spec(instance.settings, now=True),
        actor=EDITOR,
    )  # fmt: skip
    cli(runner, instance, "campaign", "reject", str(other.id), "--comment", "not yet")
    assert approvals.get_request(instance.settings, other.id).state == "rejected"
