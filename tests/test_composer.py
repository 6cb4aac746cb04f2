"""Composing in a helper process: the same messages and the same ledger guarantees as in-process."""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dkim
import pytest
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlmodel import Session
from typer.testing import CliRunner

from newsletter import runtime
from newsletter.config import DeliverySettings, Settings, SmtpSettings
from newsletter.content.issue_intake import sample_issue_path
from newsletter.delivery.batches import portable
from newsletter.delivery.campaigns import prepare_send
from newsletter.delivery.engine import SendReport
from newsletter.delivery.replies import Reply
from newsletter.delivery.smtp import SmtpConnection, SmtpTransport
from newsletter.delivery.transports import CONNECTION_FAULT
from newsletter.issues import get_issue
from newsletter.mail.outgoing import Outgoing
from newsletter.models import Delivery, DeliveryState
from newsletter.render.environment import TemplateRenderError
from newsletter.testing.sink import LoopbackController, RecordingHandler, start_sink
from tests.conftest import (
    Instance,
    broken_templates,
    cli,
    ledger_by_email,
    make_instance,
    send_sample,
)

EMBASSIES = ["de-berlin", "fr-paris", "jp-tokyo"]


def _load(runner: CliRunner, instance: Instance, count: int) -> list[str]:
    """The sample issue and `count` subscribers over three missions, some with sectors."""
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    lists = instance.dir / "lists"
    lists.mkdir()
    people: list[str] = []
    for e, embassy in enumerate(EMBASSIES):
        rows = [f"h{e}{i:03d}@example.org" for i in range(e, count, len(EMBASSIES))]
        sectors = ["", "ai", "integrated-circuits;robotics"]
        (lists / f"{embassy}.csv").write_text(
            "email,name,title,sectors,language\n"
            + "".join(
                f"{p},读者{i},,{sectors[i % 3]},{'en' if i % 4 == 0 else 'zh'}\n"
                for i, p in enumerate(rows)
            ),
            encoding="utf-8",
        )
        people += rows
    cli(runner, instance, "subscribers", "import", str(lists))
    return people


def _send(
    settings: Settings,
    transport: str = "smtp",
    *,
    helper: bool | None = True,
    batch_size: int = 7,
    stop_after: int | None = None,
    worker: str | None = None,
    prepare: bool = True,
) -> SendReport:
    """`newsletter send` (`prepare=False`: the engine alone, as a worker), stopped after
    `stop_after` messages if given."""
    stop = asyncio.Event()
    done = Counter[str]()

    def progress(n: int) -> None:
        done["messages"] += n
        if stop_after is not None and done["messages"] >= stop_after:
            stop.set()

    return send_sample(
        settings, prepare=prepare, transport=transport,
        delivery=DeliverySettings(batch_size=batch_size), helper=helper, stop=stop,
        progress=progress, worker=worker,
    )  # fmt: skip


def _rows(settings: Settings) -> dict[str, Delivery]:
    return ledger_by_email(settings)


def _smtp(settings: Settings, server: LoopbackController) -> Settings:
    return settings.overridden(
        {"smtp.host": "127.0.0.1", "smtp.port": server.port, "smtp.timeout": 5}
    )


def _dkim_key(folder: Path) -> tuple[Path, bytes]:
    key = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def test_a_helper_sends_the_same_signed_messages_once_each(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController, tmp_path: Path
) -> None:
    people = _load(runner, instance, 40)
    key, record = _dkim_key(tmp_path)
    settings = _smtp(instance.settings, smtp_server)
    settings = settings.overridden(
        {
            "dkim.domain": "newsletter.example.org",
            "dkim.selector": "s2026",
            "dkim.key_file": str(key),
        }
    )

    report = _send(settings)

    assert report.sent == len(people) and report.state == "finished"
    assert report.profiles >= 2  # rendered in the helper, counted in the report
    received = smtp_server.handler.received
    assert Counter(r.rcpt for r in received) == Counter(people)
    rows = _rows(settings)
    assert {r.state for r in rows.values()} == {DeliveryState.SENT}
    assert all(r.lease_until is None and r.profile and r.message_id for r in rows.values())

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s2026._domainkey.newsletter.example.org."
        return record

    for message in received:
        assert dkim.verify(message.data, dnsfunc=dns)
        parsed = message.parsed()
        assert parsed["Message-ID"] == rows[message.rcpt].message_id
        assert [a.addr_spec for a in parsed["To"].addresses] == [message.rcpt]
    assert multiprocessing.active_children() == []  # the helper is gone


def test_a_helper_gives_the_file_transport_its_previews(
    runner: CliRunner, instance: Instance
) -> None:
    people = _load(runner, instance, 12)
    settings = instance.settings
    report = _send(settings, "file")
    assert report.sent == len(people)
    outbox = settings.path(settings.outbox)
    messages, previews = sorted(outbox.glob("*.eml")), sorted(outbox.glob("*.html"))
    assert len(messages) == len(previews) == len(people)
    assert [m.stem for m in messages] == [p.stem for p in previews]
    assert all("%%" not in p.read_text(encoding="utf-8") for p in previews)


def test_stopping_with_a_helper_releases_what_it_claimed(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    people = _load(runner, instance, 60)
    server = start_sink(RecordingHandler(data_delay=0.01))
    try:
        settings = _smtp(instance.settings, server)
        report = _send(settings, batch_size=10, stop_after=5)
        assert 5 <= report.sent < len(people) and report.state == "sending"
        rows = _rows(settings).values()
        assert not [r for r in rows if r.state == DeliveryState.SENDING]
        waiting = [r for r in rows if r.state == DeliveryState.QUEUED]
        assert waiting and all(r.lease_until is None and not r.worker for r in waiting)
        assert multiprocessing.active_children() == []

        again = _send(settings, batch_size=10)
        assert again.state == "finished"
        assert Counter(r.rcpt for r in server.handler.received) == Counter(people)
    finally:
        server.stop()


def test_a_template_error_in_the_helper_pauses_the_campaign_with_the_reason(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController, tmp_path: Path
) -> None:
    _load(runner, instance, 9)
    templates = broken_templates(tmp_path)
    settings = _smtp(instance.settings, smtp_server).overridden({"templates_dir": str(templates)})
    report = _send(settings)
    assert report.state == "paused" and report.sent == report.failed == 0
    assert "cannot be rendered" in report.reason and "digest.mjml.j2" in report.reason
    assert "line 1" in report.reason
    assert not smtp_server.handler.received
    assert multiprocessing.active_children() == []
    assert {r.state for r in _rows(settings).values()} == {DeliveryState.QUEUED}


def test_errors_that_do_not_pickle_are_carried_as_themselves() -> None:
    error = TemplateRenderError("digest.mjml.j2", "line 3: unexpected end")
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(error))  # why `portable` exists
    back = pickle.loads(pickle.dumps(portable(error)))
    assert type(back) is TemplateRenderError and str(back) == str(error)
    assert back.template == "digest.mjml.j2" and back.problem == "line 3: unexpected end"
    plain = ValueError("plain")
    assert portable(plain) is plain


DRIVER = """
import sys
from pathlib import Path
from newsletter.config import DeliverySettings, load_settings
from newsletter.services.actors import Actor
from newsletter.services.sending import send_issue


def main() -> None:
    settings = load_settings(Path(sys.argv[1]))
    settings = settings.overridden({"smtp.port": int(sys.argv[2]), "smtp.concurrency": 4})
    send_issue(settings, "2020-01", actor=Actor.cli(), transport="smtp",
               delivery=DeliverySettings(batch_size=8), helper=True)


if __name__ == "__main__":
    main()
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in {"Z", "X"}  # a zombie has exited; only its parent's wait is missing


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_with_a_helper_then_send_again_reaches_everyone_once(
    runner: CliRunner, tmp_path: Path
) -> None:
    instance = make_instance(tmp_path, f"sqlite:///{tmp_path / 'newsletter.db'}")
    cli(runner, instance, "init")
    people = _load(runner, instance, 60)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    handler = RecordingHandler(data_delay=0.05)
    server = start_sink(handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, str(driver), str(instance.config), str(server.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while len(handler.received) < 15 and time.monotonic() < deadline:
            time.sleep(0.02)
        helpers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert helpers and 15 <= len(handler.received) < len(people)
        deadline = time.monotonic() + 10
        while not all(_gone(pid) for pid in helpers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(pid) for pid in helpers)  # no helper outlives its sender

        env = {
            **os.environ,
            "NEWSLETTER_TRANSPORT": "smtp",
            "NEWSLETTER_SMTP__PORT": str(server.port),
        }
        command = [
            str(Path(sys.executable).parent / "newsletter"),
            "--config",
            str(instance.config),
        ]
        again = subprocess.run(
            [*command, "send", "2020-01"], env=env, capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 0, again.stderr
        counts = Counter(r.rcpt for r in handler.received)
        assert max(counts.values()) == 1  # nobody twice
        rows = _rows(instance.settings)
        unknown = {e for e, r in rows.items() if r.state == DeliveryState.UNKNOWN}
        assert len(unknown) <= 4  # one window (concurrency) at most was on the wire
        assert set(counts) | unknown == set(people)  # nobody lost
        assert {r.state for r in rows.values()} <= {DeliveryState.SENT, DeliveryState.UNKNOWN}
    finally:
        server.stop()


@pytest.mark.postgres
def test_two_senders_with_helpers_share_one_campaign_on_postgresql(
    runner: CliRunner, tmp_path: Path, pg_url: str
) -> None:
    instance = make_instance(tmp_path, pg_url)
    cli(runner, instance, "init")
    people = _load(runner, instance, 90)
    # Each sender greets with its own domain; mail waits until both have: both get rows.
    server = start_sink(RecordingHandler(data_delay=0.005, hold_until_greeted=2))
    try:
        settings = _smtp(instance.settings, server)
        db = runtime.open_database(settings)
        with Session(db) as session:
            prepare_send(session, get_issue(session, "2020-01").record)
            session.commit()
        db.dispose()

        async def both() -> list[SendReport]:
            return list(
                await asyncio.gather(
                    *(
                        asyncio.to_thread(
                            _send,
                            settings.overridden({"domain": f"{name}.example.org"}),
                            batch_size=5,
                            worker=name,
                            prepare=False,
                        )  # fmt: skip
                        for name in ("one", "two")
                    )
                )
            )

        reports = asyncio.run(both())
        counts = Counter(r.rcpt for r in server.handler.received)
        assert counts == Counter(people)  # each row once, over two senders
        assert sum(r.sent for r in reports) == len(people)
        assert all(r.sent > 0 for r in reports)  # both senders sent rows, not one alone
        domains = {str(m.parsed()["Message-ID"]).rsplit("@", 1)[1] for m in server.handler.received}
        assert domains == {"one.example.org>", "two.example.org>"}
        assert {r.state for r in _rows(settings).values()} == {DeliveryState.SENT}
    finally:
        server.stop()


# --- SMTP PIPELINING (smtp.py): the same replies and the same messages with and without it -----


class PipeliningHandler(RecordingHandler):
    """Also offers PIPELINING (RFC 2920), as Postfix does; aiosmtpd reads pipelined commands."""

    async def handle_EHLO(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        offered = await super().handle_EHLO(server, session, envelope, hostname, responses)
        return [*offered[:-1], "250-PIPELINING", offered[-1]]


def _exchange(handler: RecordingHandler, messages: list[Outgoing]) -> tuple[list[Reply], bool]:
    """Send `messages` over one pooled connection; the replies, and whether it pipelined."""
    server = start_sink(handler)
    try:
        settings = SmtpSettings(host="127.0.0.1", port=server.port, timeout=5)

        async def send_all() -> tuple[list[Reply], bool]:
            transport = SmtpTransport(settings, local_hostname="newsletter.example.org")
            connection = await transport.connect()
            assert isinstance(connection, SmtpConnection)
            replies = [await connection.send(m) for m in messages]
            pipelined = connection.client is not None and connection.client.has_extn("pipelining")
            await connection.close()
            return replies, pipelined

        return asyncio.run(send_all())
    finally:
        server.stop()


def test_pipelining_changes_no_reply_and_no_message() -> None:
    people = [f"p{i}@example.org" for i in range(7)]
    dotted = b"Subject: x\r\n\r\n.starts with a dot\r\nthen\r\n..two\r\n.\r\nend"
    plain = b"Subject: y\r\n\r\nbody\r\n"
    sender = "newsletter@newsletter.example.org"
    messages = [
        Outgoing(sender, p, dotted if i == 1 else plain, f"m{i}") for i, p in enumerate(people)
    ]
    outcomes = []
    for handler in (RecordingHandler(), PipeliningHandler()):
        handler.mail_replies.append("421 4.7.0 too busy")  # the first MAIL
        handler.script(people[2], "451 4.7.1 greylisted")
        handler.script(people[3], "550 5.1.1 user unknown")
        handler.script(people[4], "421 4.7.0 closing")
        handler.hang_up_after_data.add(people[5])
        replies, pipelined = _exchange(handler, messages)
        received = sorted((r.rcpt, r.data) for r in handler.received)
        outcomes.append(([(r.code, r.text) for r in replies], received, pipelined))
    (one_by_one, plain_received, offered), (piped, piped_received, used) = outcomes
    assert not offered and used
    assert piped == one_by_one
    # A 421 closes that session only: the message goes once more on a fresh connection.
    assert [code for code, _ in piped] == [250, 250, 451, 550, 250, CONNECTION_FAULT, 250]
    assert piped_received == plain_received
    assert [data for rcpt, data in piped_received if rcpt == people[1]] == [dotted + b"\r\n"]
