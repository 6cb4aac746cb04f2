"""Staff CLI for lists: import, export, show, remove, handover; SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import email
import getpass
import io
import json
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter.db import make_engine
from newsletter.models import AuditEvent, Subscriber, Suppression
from tests.conftest import Instance, cli, invoke

NAUGHTY = [
    'Wang "Fang" O\'Neil',
    "<script>alert('x')</script>",
    "\u200fعمر حداد",
    "李伟 🚀👩\u200d🔬",
    "=1+1",
    "@SUM(A1)",
    "-2",
    "+1",
    "長" * 200,
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _listing(runner: CliRunner, instance: Instance, *args: str) -> dict[str, dict[str, Any]]:
    rows = json.loads(cli(runner, instance, "subscribers", "list", "--json", *args))
    return {row["email"]: row for row in rows}


def _outbox(instance: Instance) -> list[EmailMessage]:
    folder = instance.settings.path(instance.settings.outbox)
    messages = []
    for file in sorted(folder.glob("*.eml")):
        parsed = email.message_from_bytes(file.read_bytes(), policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        messages.append(parsed)
    return messages


def test_bad_rows_are_all_reported_and_nothing_changes(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    good = _write(tmp_path / "de-berlin.csv", "email,name,sectors\nok@example.org,好,ai\n")
    bad = _write(
        tmp_path / "fr-paris.csv",
        "email,name,sectors,language\nbroken@,X,,zh\nfine@example.org,Y,nope,zh\n"
        "ok@example.org,Dup,,zh\nctl@example.org,A\x1bB,,zh\n",
    )
    result = invoke(runner, instance, "subscribers", "import", str(good), str(bad))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[-1].startswith(f"error: {bad}:2: email: 'broken@'")
    assert lines[-1].endswith("(and 3 more); nothing imported: fix the rows or pass --skip-invalid")
    for where in (f"{bad}:2: email", f"{bad}:3: sectors", f"{bad}:4: email", f"{bad}:5: name"):
        assert any(line.startswith(where) for line in lines), where
    assert _listing(runner, instance) == {}

    cli(runner, instance, "subscribers", "import", str(good), str(bad), "--skip-invalid")
    assert set(_listing(runner, instance)) == {"ok@example.org"}


def test_export_then_import_gives_back_the_same_naughty_names(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["email", "name", "title", "sectors", "language"])
    for i, name in enumerate(NAUGHTY):
        writer.writerow([f"n{i}@example.org", name, name[:20], "ai;biomedicine", "zh"])
    source = _write(tmp_path / "de-berlin.csv", text.getvalue())
    cli(runner, instance, "subscribers", "import", str(source))
    before = _listing(runner, instance)
    assert {row["name"] for row in before.values()} == set(NAUGHTY)

    exported = tmp_path / "all.csv"
    cli(runner, instance, "subscribers", "export", "-o", str(exported))
    raw = exported.read_text(encoding="utf-8-sig")
    assert "'=1+1" in raw and "'@SUM(A1)" in raw and "'-2" in raw and "'+1" in raw
    assert not [c for r in csv.reader(raw.splitlines()) for c in r if c[:1] in "=+-@"]
    folder = tmp_path / "by-embassy"
    cli(runner, instance, "subscribers", "export", "--by-embassy", str(folder))
    assert [p.name for p in folder.iterdir()] == ["de-berlin.csv"]

    for path in (exported, folder):
        report = json.loads(cli(runner, instance, "subscribers", "import", str(path), "--json"))
        assert (report["added"], report["updated"]) == (0, 0)
        assert report["unchanged"] == len(NAUGHTY)
    assert _listing(runner, instance) == before


def test_export_filters_and_refuses_both_outputs(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    cli(runner, instance, "subscribers", "add", "a@example.org", "--embassy", "de-berlin",
        "--sectors", "ai")  # fmt: skip
    cli(runner, instance, "subscribers", "add", "b@example.org", "--embassy", "fr-paris",
        "--status", "pending")  # fmt: skip
    text = cli(runner, instance, "subscribers", "export", "--sector", "ai")
    assert "a@example.org" in text and "b@example.org" not in text
    text = cli(runner, instance, "subscribers", "export", "--status", "pending")
    assert "b@example.org" in text and "a@example.org" not in text
    text = cli(runner, instance, "subscribers", "export", "--embassy", "fr-paris")
    assert text.splitlines()[0] == "email,name,title,sectors,language,status,embassy"
    result = invoke(runner, instance, "subscribers", "export", "-o", str(tmp_path / "x.csv"),
                    "--by-embassy", str(tmp_path))  # fmt: skip
    assert result.exit_code == 2
    result = invoke(runner, instance, "subscribers", "export", "--embassy", "xx-nowhere")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: embassy 'xx-nowhere' not found; see `newsletter embassies list`"
    )


def test_import_never_reactivates_people_who_left(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    listed = _write(
        tmp_path / "de-berlin.csv", "email,name,status\na@example.org,A,\nb@example.org,B,\n"
    )
    cli(runner, instance, "subscribers", "import", str(listed))
    # The list itself says b left: an import may record that...
    (tmp_path / "left").mkdir()
    left = _write(tmp_path / "left" / "de-berlin.csv", "email,status\nb@example.org,unsubscribed\n")
    cli(runner, instance, "subscribers", "import", str(left))
    assert _listing(runner, instance)["b@example.org"]["status"] == "unsubscribed"
    # ...but no import brings b back.
    result = invoke(runner, instance, "subscribers", "import", str(listed), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["refused"] == [
        {"email": "b@example.org", "status": "unsubscribed"}
    ]
    assert "not re-activated: b@example.org is unsubscribed" in result.stderr
    assert _listing(runner, instance)["b@example.org"]["status"] == "unsubscribed"


def test_show_lists_the_history(runner: CliRunner, instance: Instance, tmp_path: Path) -> None:
    cli(runner, instance, "subscribers", "add", "a@example.org", "--embassy", "de-berlin",
        "--name", "张三", "--status", "pending")  # fmt: skip
    listed = _write(tmp_path / "de-berlin.csv", "email,name,sectors\na@example.org,张三,ai\n")
    cli(runner, instance, "subscribers", "import", str(listed))
    shown = json.loads(cli(runner, instance, "subscribers", "show", "A@Example.org", "--json"))
    assert shown["email"] == "a@example.org" and shown["sectors"] == ["ai"]
    assert [(e["action"], e["actor"], e["via"]) for e in shown["history"]] == [
        ("created", f"cli:{getpass.getuser()}", "cli"),  # the shell user who ran the command
        ("updated", f"cli:{getpass.getuser()}", "import"),
    ]
    assert "created" in cli(runner, instance, "subscribers", "show", "a@example.org")
    result = invoke(runner, instance, "subscribers", "show", "nobody@example.org")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: subscriber 'nobody@example.org' not found; see `newsletter subscribers list`"
    )


def test_remove_erases_and_suppresses_the_address(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    cli(runner, instance, "subscribers", "add", "Gone@Example.org", "--embassy", "de-berlin",
        "--name", "王五", "--title", "参赞", "--sectors", "ai")  # fmt: skip
    cli(runner, instance, "subscribers", "remove", "gone@example.org")
    assert "gone@example.org" not in _listing(runner, instance)

    engine = make_engine(instance.settings.resolved_database_url)
    with Session(engine) as session:
        [row] = session.exec(select(Subscriber)).all()
        assert row.email == f"erased-{row.id}@invalid" and row.name == row.title == ""
        assert row.status == "unsubscribed"
        [entry] = session.exec(select(Suppression)).all()
        assert "gone" not in entry.email_hash and len(entry.email_hash) == 64
        details = " ".join(e.detail for e in session.exec(select(AuditEvent)))
        assert "gone@example.org" not in details
    engine.dispose()

    listed = _write(tmp_path / "de-berlin.csv", "email,name\nGONE@example.org,王五\n")
    result = invoke(runner, instance, "subscribers", "import", str(listed), "--json")
    assert json.loads(result.stdout)["suppressed"] == ["gone@example.org"]
    assert _listing(runner, instance) == {}
    result = invoke(
        runner, instance, "subscribers", "add", "gone@example.org", "--embassy", "de-berlin"
    )
    assert result.exit_code == 1 and "suppression list" in result.stderr
    # An address never listed can be suppressed ahead of any import.
    cli(runner, instance, "subscribers", "remove", "never@example.org", "--suppress")
    assert invoke(runner, instance, "subscribers", "add", "never@example.org",
                  "--embassy", "de-berlin").exit_code == 1  # fmt: skip


def test_handover_gives_the_post_to_the_successor(runner: CliRunner, instance: Instance) -> None:
    cli(runner, instance, "subscribers", "add", "old@example.org", "--embassy", "de-berlin",
        "--name", "李伟", "--title", "科技参赞", "--sectors", "ai,biomedicine",
        "--language", "en")  # fmt: skip
    handed = cli(runner, instance, "subscribers", "handover", "old@example.org",
                 "New@Example.org", "--name", "赵六", "--json")  # fmt: skip
    summary = json.loads(handed)
    assert summary["new"] == "new@example.org" and summary["confirmation_sent"] is True
    people = _listing(runner, instance)
    new, old = people["new@example.org"], people["old@example.org"]
    assert (new["title"], new["embassy"], new["language"], new["status"]) == (
        "科技参赞", "de-berlin", "en", "pending",
    )  # fmt: skip
    assert set(new["sectors"]) == {"ai", "biomedicine"} and new["name"] == "赵六"
    assert old["status"] == "unsubscribed"
    history = json.loads(cli(runner, instance, "subscribers", "show", "old@example.org", "--json"))
    assert [e["action"] for e in history["history"]][-2:] == ["status", "handover"]

    [mail] = _outbox(instance)
    assert mail["To"].addresses[0].addr_spec == "new@example.org"
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "/confirm/" in text and "editorial office" in text

    again = invoke(
        runner, instance, "subscribers", "handover", "old@example.org", "new@example.org"
    )
    assert again.exit_code == 1 and "already handed over on" in again.stderr


def test_require_confirmation_imports_pending_and_sends_links(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    listed = _write(tmp_path / "de-berlin.csv", "email,name\na@example.org,A\nb@example.org,B\n")
    dry = json.loads(cli(runner, instance, "subscribers", "import", str(listed),
                         "--require-confirmation", "--dry-run", "--json"))  # fmt: skip
    assert dry["added"] == 2 and dry["confirmations_sent"] == 0 and _outbox(instance) == []
    done = json.loads(cli(runner, instance, "subscribers", "import", str(listed),
                          "--require-confirmation", "--json"))  # fmt: skip
    assert done["confirmations_sent"] == 2
    assert {m["To"].addresses[0].addr_spec for m in _outbox(instance)} == {
        "a@example.org",
        "b@example.org",
    }
    assert {r["status"] for r in _listing(runner, instance).values()} == {"pending"}
