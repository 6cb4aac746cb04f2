"""The audit chain: every door writes it, `audit verify` finds a changed or removed row, and two
writers at once never fork it. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from newsletter import audit_chain, audit_log
from newsletter.actors import Actor
from newsletter.models import AdminEvent, utcnow
from newsletter.services import audit
from tests.conftest import LISTS, Instance, cli, database, drop_chain_guards, invoke


def _verify(runner: CliRunner, instance: Instance) -> tuple[int, dict[str, Any], str]:
    result = invoke(runner, instance, "audit", "verify", "--json")
    return result.exit_code, json.loads(result.stdout), result.stderr


def _ids(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return [i for i in session.exec(select(AdminEvent.id).order_by(col(AdminEvent.id))) if i]


def test_subscriber_lifecycle_events_are_chained_without_addresses(
    runner: CliRunner, instance: Instance
) -> None:
    cli(runner, instance, "subscribers", "import", str(LISTS / "de-berlin.csv"))
    events = json.loads(cli(runner, instance, "audit", "list", "--json", "--limit", "1000"))
    assert events and {e["action"] for e in events} == {"subscriber.created"}
    assert {e["mission"] for e in events} == {"de-berlin"}
    assert all(e["target"].startswith("subscriber:") for e in events)
    assert not any("@" in json.dumps(e["detail"]) + e["target"] for e in events)
    code, verified, _ = _verify(runner, instance)
    assert (code, verified["intact"], verified["events"]) == (0, True, len(events))
    assert verified["head"] == events[0]["hash"]


def test_an_erasure_leaves_the_chain_whole(runner: CliRunner, instance: Instance) -> None:
    cli(runner, instance, "subscribers", "add", "anna@example.de", "--embassy", "de-berlin")
    cli(runner, instance, "subscribers", "remove", "anna@example.de", "--yes")
    actions = [e["action"] for e in json.loads(cli(runner, instance, "audit", "list", "--json"))]
    assert actions[-1] == "subscriber.created" and "subscriber.erased" in actions
    assert _verify(runner, instance)[0] == 0


def test_suppressions_of_unlisted_addresses_are_chained_without_the_address(
    runner: CliRunner, instance: Instance
) -> None:
    cli(runner, instance, "subscribers", "remove", "typo@example.de", "--suppress", "--yes")
    cli(runner, instance, "subscribers", "unsuppress", "typo@example.de", "--reason", "a typo")
    events = json.loads(cli(runner, instance, "audit", "list", "--json"))
    assert [e["action"] for e in events][:2] == ["address.unsuppressed", "address.suppressed"]
    assert all(e["actor"].startswith("cli:") for e in events[:2])
    assert "typo" not in json.dumps(events)
    assert _verify(runner, instance)[0] == 0


def test_rows_cannot_be_changed_through_sql_while_the_guards_stand(instance: Instance) -> None:
    with database(instance) as engine:
        with Session(engine) as session:
            audit.record(session, Actor.cli(), "test.event")
            session.commit()
        for statement in ("UPDATE admin_event SET action = 'x'", "DELETE FROM admin_event"):
            with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
        assert len(_ids(engine)) == 1


def _three_events(instance: Instance) -> list[int]:
    with database(instance) as engine:
        for n in range(3):
            with Session(engine) as session:
                audit.record(session, Actor.staff("li@example.org"), "test.event", detail={"n": n})
                session.commit()
        return _ids(engine)


def test_verify_names_the_first_changed_row(runner: CliRunner, instance: Instance) -> None:
    _first, second, _third = _three_events(instance)
    assert _verify(runner, instance)[0] == 0
    with database(instance) as engine:
        drop_chain_guards(engine)
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE admin_event SET actor_id = 'someone@else.org' WHERE id = :id"),
                {"id": second},
            )
    code, verified, stderr = _verify(runner, instance)
    assert code == 1
    assert verified["broken"]["id"] == second and verified["events"] == 1
    assert f"broken at event {second}: its contents do not match its hash" in stderr


def test_verify_names_the_row_after_a_removed_one(runner: CliRunner, instance: Instance) -> None:
    first, second, third = _three_events(instance)
    with database(instance) as engine:
        drop_chain_guards(engine)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM admin_event WHERE id = :id"), {"id": second})
    code, verified, stderr = _verify(runner, instance)
    assert (code, verified["broken"]["id"]) == (1, third)
    assert "an event before it was removed" in stderr
    with database(instance) as engine, engine.begin() as conn:
        conn.execute(text("DELETE FROM admin_event WHERE id = :id"), {"id": first})
    assert _verify(runner, instance)[1]["broken"]["id"] == third


def test_two_writers_at_once_never_fork_the_chain(instance: Instance) -> None:
    """Each thread appends in its own transactions, several events each, interleaved."""
    writers, per_writer = 4, 8
    start = threading.Barrier(writers)
    failures: list[BaseException] = []

    def write(engine: Engine, who: int) -> None:
        try:
            start.wait()
            for n in range(per_writer):
                with Session(engine) as session:
                    audit.record(
                        session, Actor.system(f"w{who}", "test"), "test.a", detail={"n": n}
                    )
                    audit.record(
                        session, Actor.system(f"w{who}", "test"), "test.b", detail={"n": n}
                    )
                    session.commit()
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            failures.append(exc)

    with database(instance) as engine:
        threads = [threading.Thread(target=write, args=(engine, i)) for i in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        with Session(engine) as session:
            events = list(audit_log.in_order(session))
    assert len(events) == writers * per_writer * 2
    # One chain: every prev_hash is used once, each by the event right after it.
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    with database(instance) as engine:
        assert audit.verify(instance.settings, db=engine).broken is None


def test_audit_list_filters_by_actor_and_action(runner: CliRunner, instance: Instance) -> None:
    with database(instance) as engine, Session(engine) as session:
        audit.record(session, Actor.staff("li@example.org"), "staff.login", ip="192.0.2.7")
        audit.record(session, Actor.cli(), "staff.add", target="staff:x@example.org")
        session.commit()
    by_li = json.loads(
        cli(runner, instance, "audit", "list", "--json", "--actor", "staff:li@example.org")
    )
    assert [(e["action"], e["ip"]) for e in by_li] == [("staff.login", "192.0.2.7")]
    adds = json.loads(cli(runner, instance, "audit", "list", "--json", "--action", "staff.add"))
    assert [e["target"] for e in adds] == ["staff:x@example.org"]
    family = json.loads(cli(runner, instance, "audit", "list", "--json", "--action", "staff"))
    assert len(family) == 2
    text_out = cli(runner, instance, "audit", "list")
    assert "staff:li@example.org via console: staff.login" in text_out


def test_the_chain_arithmetic() -> None:
    rows: list[tuple[int, str, str, dict[str, object]]] = []
    prev = audit_chain.GENESIS
    for n in range(3):
        fields: dict[str, object] = {
            "at": utcnow(), "actor_kind": "cli", "actor_id": "alice", "via": "cli",
            "action": "x", "target": "", "mission": "", "detail": f'{{"n":{n}}}', "ip": "",
        }  # fmt: skip
        digest = audit_chain.link(prev, fields)
        rows.append((n + 1, prev, digest, fields))
        prev = digest
    assert audit_chain.verify(rows) == audit_chain.Verified(3, prev, None)
    swapped = [rows[1], rows[0], rows[2]]
    broken = audit_chain.verify(swapped).broken
    assert broken is not None and broken.id == 2 and "prev_hash" in broken.problem
