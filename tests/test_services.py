"""The services every door calls: Actor and Scope, one transaction each, one send path."""

from __future__ import annotations

import getpass
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import make_engine
from newsletter.directory import bundled_data_dir
from newsletter.errors import NotFoundError
from newsletter.models import AuditEvent, Subscriber, SubscriberStatus
from newsletter.services import sending
from newsletter.services import subscribers as service
from newsletter.services.actors import Actor, Scope
from newsletter.services.issues import import_issue
from newsletter.subscriptions import handover
from newsletter.subscriptions.lists import BadRowsError
from newsletter.subscriptions.suppression import SuppressedAddressError
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance

ALL = Scope.all()
BERLIN = Scope.of({"de-berlin"})
STAFF = Actor.staff("li.wei@example.org")
LI = "li.na@mission-berlin.example.org"  # de-berlin
DUPONT = "jean.dupont@mission-paris.example.org"  # fr-paris


@pytest.fixture
def db(instance: Instance) -> Iterator[Engine]:
    engine = make_engine(instance.settings.resolved_database_url)
    yield engine
    engine.dispose()


def _two_missions(instance: Instance, db: Engine) -> None:
    settings = instance.settings
    service.add_subscriber(
        settings, LI, embassy="de-berlin", name="李娜", sectors=("ai",), actor=STAFF, scope=ALL,
        db=db,
    )  # fmt: skip
    service.add_subscriber(
        settings, DUPONT, embassy="fr-paris", name="Jean", actor=STAFF, scope=ALL, db=db
    )


def _row(db: Engine, email: str) -> tuple[Subscriber | None, list[tuple[str, str, str, str]]]:
    with Session(db) as session:
        found = session.exec(select(Subscriber).where(Subscriber.email == email)).first()
        if found is None:
            return None, []
        events = session.exec(select(AuditEvent).where(AuditEvent.subscriber_id == found.id))
        return found, [(e.action, e.new_status, e.actor, e.via) for e in events]


def test_a_scope_hides_and_refuses_people_of_other_missions(
    instance: Instance, db: Engine, tmp_path: Path
) -> None:
    settings = instance.settings
    _two_missions(instance, db)
    import_issue(settings, sample_issue_path().read_bytes(), source="sample", actor=STAFF, db=db)

    listed = service.list_subscribers(settings, scope=BERLIN, db=db)
    assert [v.email for v in listed] == [LI]
    # Another mission's code is "not found", as an unknown one is (and as export says).
    with pytest.raises(NotFoundError, match="embassy 'fr-paris' not found"):
        service.list_subscribers(settings, scope=BERLIN, embassy="fr-paris", db=db)
    assert [r.email for r in service.export_lists(settings, scope=BERLIN, db=db)] == [LI]
    assert service.show_subscriber(settings, LI, scope=BERLIN, db=db).embassy == "de-berlin"

    # Out of scope is "not found", word for word as for nobody at all.
    with pytest.raises(NotFoundError) as nobody:
        service.show_subscriber(settings, "nobody@example.org", scope=BERLIN, db=db)
    refusals: list[Callable[[], object]] = [
        lambda: service.show_subscriber(settings, DUPONT, scope=BERLIN, db=db),
        lambda: service.edit_subscriber(
            settings, DUPONT, name="X", actor=STAFF, scope=BERLIN, db=db
        ),
        lambda: service.unsubscribe_on_request(
            settings, DUPONT, reason="letter of 3 May", actor=STAFF, scope=BERLIN, db=db
        ),
        lambda: service.erase_subscriber(settings, DUPONT, actor=STAFF, scope=BERLIN, db=db),
        lambda: service.hand_over(
            settings,
            DUPONT,
            "new.counsellor@mission-paris.example.org",
            actor=STAFF,
            scope=BERLIN,
            mail=False,
            db=db,
        ),  # fmt: skip
        lambda: sending.preview_digest(settings, "2020-01", DUPONT, scope=BERLIN, db=db),
        lambda: sending.explain_digest(settings, "2020-01", DUPONT, scope=BERLIN, db=db),
    ]
    for refused in refusals:
        with pytest.raises(NotFoundError) as caught:
            refused()
        assert str(caught.value) == str(nobody.value).replace("nobody@example.org", DUPONT)

    # Nor can anyone be added to, or moved into, another mission.
    with pytest.raises(service.OutOfScopeError):
        service.add_subscriber(
            settings, "x@example.org", embassy="fr-paris", actor=STAFF, scope=BERLIN, db=db
        )
    with pytest.raises(service.OutOfScopeError):
        service.edit_subscriber(settings, LI, mission="fr-paris", actor=STAFF, scope=BERLIN, db=db)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "fr-paris.csv").write_text(f"email,name\n{DUPONT},Jean Dupont\n", encoding="utf-8")
    (lists / "de-berlin.csv").write_text(f"email,name\n{DUPONT},Jean Dupont\n", encoding="utf-8")
    with pytest.raises(BadRowsError) as bad:
        service.import_lists(settings, [lists / "fr-paris.csv"], actor=STAFF, scope=BERLIN, db=db)
    assert [e.reason for e in bad.value.errors] == ["not one of your missions"]
    with pytest.raises(BadRowsError):  # moving Dupont to Berlin would take him from Paris
        service.import_lists(settings, [lists / "de-berlin.csv"], actor=STAFF, scope=BERLIN, db=db)

    dupont, events = _row(db, DUPONT)
    assert dupont is not None and (dupont.name, dupont.embassy_code) == ("Jean", "fr-paris")
    assert dupont.status == SubscriberStatus.ACTIVE
    assert events == [("created", "active", "staff:li.wei@example.org", "console")]
    # With every mission in scope the same calls work.
    assert service.show_subscriber(settings, DUPONT, scope=ALL, db=db).name == "Jean"
    assert sending.preview_digest(settings, "2020-01", DUPONT, scope=ALL, db=db).html


def test_the_cli_audit_names_the_shell_user(runner: CliRunner, instance: Instance) -> None:
    user = getpass.getuser()
    config = ["--config", str(instance.config)]
    added = runner.invoke(app, [*config, "subscribers", "add", LI, "--embassy", "de-berlin"])
    assert added.exit_code == 0, added.output
    handed = runner.invoke(
        app, [*config, "subscribers", "handover", LI, "zhao.lei@mission-berlin.example.org",
              "--no-mail"],
    )  # fmt: skip
    assert handed.exit_code == 0, handed.output
    shown = runner.invoke(app, [*config, "subscribers", "show", LI, "--json"])
    history = json.loads(shown.stdout)["history"]
    assert {(e["actor"], e["via"]) for e in history} == {(f"cli:{user}", "cli")}
    assert [e["action"] for e in history] == ["created", "status", "handover"]


def test_edit_and_unsubscribe_on_request_are_audited(instance: Instance, db: Engine) -> None:
    settings = instance.settings
    _two_missions(instance, db)
    edited, changed = service.edit_subscriber(
        settings, LI, name="李娜娜", sectors=("robotics", "ai"), language="en",
        mission="de-berlin", actor=STAFF, scope=BERLIN, db=db,
    )  # fmt: skip
    assert changed and (edited.name, edited.language) == ("李娜娜", "en")
    assert set(edited.sectors) == {"ai", "robotics"}
    assert not service.edit_subscriber(settings, LI, language="en", actor=STAFF, scope=ALL, db=db)[
        1
    ]

    with pytest.raises(service.RequestReasonError):
        service.unsubscribe_on_request(settings, LI, reason="  ", actor=STAFF, scope=ALL, db=db)
    assert service.show_subscriber(settings, LI, scope=ALL, db=db).status == "active"
    gone, changed = service.unsubscribe_on_request(
        settings, LI, reason="letter of 3 May", actor=STAFF, scope=ALL, db=db
    )
    assert changed and gone.status == "unsubscribed"
    again = service.unsubscribe_on_request(
        settings, LI, reason="phoned too", actor=STAFF, scope=ALL, db=db
    )
    assert not again[1]  # nothing more to change, and nothing more written

    history = service.show_subscriber(settings, LI, scope=ALL, db=db).history
    assert [(e.action, e.new_status, e.detail) for e in history] == [
        ("created", "active", "console:staff:li.wei@example.org"),
        ("updated", "active", "name: 李娜娜; language: en; sectors: ai;robotics"),
        ("status", "unsubscribed", "on request: letter of 3 May"),
    ]
    assert {(e.actor, e.via) for e in history} == {("staff:li.wei@example.org", "console")}


def _refuse_handover_audit(db: Engine) -> None:
    """A real database fault at a handover's last write (its audit entry), as a full disk."""
    with db.begin() as conn:
        if db.dialect.name == "sqlite":
            conn.execute(text(
                "CREATE TRIGGER refuse BEFORE INSERT ON auditevent WHEN NEW.action = 'handover' "
                "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
            ))  # fmt: skip
        else:
            conn.execute(text(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                "IF NEW.action = 'handover' THEN RAISE EXCEPTION 'audit refused'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            ))  # fmt: skip
            conn.execute(text(
                "CREATE TRIGGER refuse BEFORE INSERT ON auditevent FOR EACH ROW "
                "EXECUTE FUNCTION refuse()"
            ))  # fmt: skip


SUCCESSOR = "zhao.lei@mission-berlin.example.org"


def _untouched(db: Engine) -> None:
    li, events = _row(db, LI)
    assert li is not None and li.status == SubscriberStatus.ACTIVE
    assert [e[0] for e in events] == ["created"]
    assert _row(db, SUCCESSOR) == (None, [])


def test_a_handover_that_fails_midway_leaves_nothing_half_done(
    instance: Instance, db: Engine
) -> None:
    settings = instance.settings
    _two_missions(instance, db)

    # The successor's address was erased on request: refused, nothing written.
    service.erase_subscriber(settings, SUCCESSOR, actor=STAFF, scope=ALL, suppress=True, db=db)
    with pytest.raises(SuppressedAddressError):
        service.hand_over(settings, LI, SUCCESSOR, actor=STAFF, scope=ALL, db=db)
    _untouched(db)

    # The storage steps join the caller's transaction: rolled back, they leave nothing.
    other = "wu.xin@mission-berlin.example.org"
    with Session(db) as session:
        handover.handover(session, settings.secret, old_email=LI, new_email=other, actor=STAFF)
        session.rollback()
    assert _row(db, other) == (None, [])
    _untouched(db)

    # The last of three writes fails: the successor and the old address's unsubscribe go too.
    _refuse_handover_audit(db)
    with pytest.raises(DBAPIError, match="audit refused"):
        service.hand_over(settings, LI, other, actor=STAFF, scope=ALL, mail=False, db=db)
    assert _row(db, other) == (None, [])
    _untouched(db)


def test_a_list_import_dry_run_and_a_bad_row_store_nothing(
    instance: Instance, db: Engine, tmp_path: Path
) -> None:
    settings = instance.settings
    good = "\n".join(f"p{i}@mission-berlin.example.org,人{i}" for i in range(5))
    listed = tmp_path / "de-berlin.csv"
    listed.write_text(f"email,name\n{good}\n", encoding="utf-8")
    dry = service.import_lists(settings, [listed], actor=STAFF, scope=ALL, dry_run=True, db=db)
    assert (dry.report.added, dry.dry_run) == (5, True)
    assert service.list_subscribers(settings, scope=ALL, db=db) == []

    listed.write_text(f"email,name\n{good}\nnot-an-address,某人\n", encoding="utf-8")
    with pytest.raises(BadRowsError):
        service.import_lists(settings, [listed], actor=STAFF, scope=ALL, db=db)
    assert service.list_subscribers(settings, scope=ALL, db=db) == []

    done = service.import_lists(
        settings, [listed], actor=STAFF, scope=ALL, skip_invalid=True, db=db
    )
    assert done.report.added == 5 and [e.line for e in done.skipped] == [7]
    assert len(service.list_subscribers(settings, scope=ALL, db=db)) == 5


def _sends(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == sending.__name__]


def test_cli_demo_and_tests_send_through_one_service(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=sending.__name__)
    user = getpass.getuser()
    config = ["--config", str(instance.config)]
    for args in (
        ["subscribers", "import", str(bundled_data_dir() / "lists")],
        ["issue", "import", str(sample_issue_path())],
    ):
        result = runner.invoke(app, [*config, *args])
        assert result.exit_code == 0, result.output
    sent = runner.invoke(
        app, [*config, "send", "2020-01", "--transport", "smtp", "--smtp-host", "127.0.0.1",
              "--smtp-port", str(smtp_server.port), "--json"],
    )  # fmt: skip
    assert sent.exit_code == 0, sent.output
    by_cli = json.loads(sent.stdout)
    [cli_send] = _sends(caplog)
    assert cli_send.startswith(f"cli:{user} (via cli) sends 2020-01: campaign {by_cli['campaign']}")
    received = Counter(m.rcpt for m in smtp_server.handler.received)
    assert by_cli["sent"] == len(received) and max(received.values()) == 1

    # The same service called directly (as the tests and the benchmark do): nothing is due.
    again = sending.send_issue(instance.settings, "2020-01", actor=STAFF, transport="null")
    assert (again.campaign, again.sent, again.state) == (by_cli["campaign"], 0, by_cli["state"])
    assert _sends(caplog)[-1].startswith("staff:li.wei@example.org (via console) sends 2020-01")

    demo = runner.invoke(app, ["demo", "--dir", str(tmp_path / "demo"), "--json"])
    assert demo.exit_code == 0, demo.output
    by_demo = json.loads(demo.stdout)
    assert _sends(caplog)[-1] == (
        f"cli:{user} (via cli) sends 2020-01: campaign {by_demo['campaign']}, "
        f"{by_demo['sent']} rows waiting"
    )
    assert by_demo["sent"] == by_cli["sent"]  # the same lists and issue, the same send
