"""SMTP transactions done right (issue 17, points 1, 3 and 9), asserted at the server's own log.

The transport is driven directly, as the engine drives it: a pool of connections, each sending
its share one message after another. The server is aiosmtpd with fault knobs (sink.py) and, where
installed, Postfix's smtp-sink.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import SmtpSettings
from newsletter.content.issue_intake import sample_issue_path
from newsletter.delivery.replies import Reply, Stage, Verdict, classify
from newsletter.delivery.smtp import SmtpConnection, SmtpTransport
from newsletter.delivery.transports import CONNECTION_FAULT, UNSENDABLE
from newsletter.directory import bundled_data_dir
from newsletter.mail.outgoing import Outgoing
from newsletter.models import DeliveryState
from newsletter.testing.sink import LoopbackController, RecordingHandler, start_sink
from tests.conftest import IN_CI, Instance, ledger_by_email

SENDER = "newsletter@newsletter.example.org"
IDN_LOCAL = "用户@例子.中国"  # a non-ASCII local part: no A-label makes it ASCII


def _messages(count: int, *, domain: str = "example.org") -> list[Outgoing]:
    return [
        Outgoing(SENDER, f"p{i}@{domain}", f"Subject: {i}\r\n\r\nissue for p{i}\r\n".encode(), f"m{i}")
        for i in range(count)
    ]  # fmt: skip


@contextmanager
def _sink(
    handler: RecordingHandler,
    *,
    login: tuple[str, str] | None = None,
    smtputf8: bool = True,
    idle_timeout: float = 300,
) -> Iterator[LoopbackController]:
    controller = start_sink(handler, login=login, smtputf8=smtputf8, idle_timeout=idle_timeout)
    try:
        yield controller
    finally:
        controller.stop()


def _settings(port: int, connections: int, **overrides: object) -> SmtpSettings:
    return SmtpSettings.model_validate(
        {"host": "127.0.0.1", "port": port, "timeout": 5, "concurrency": connections, **overrides}
    )


def _send(
    port: int, messages: Sequence[Outgoing], *, connections: int = 4, **overrides: object
) -> dict[str, Reply]:
    """Every message's reply, by recipient: `connections` pooled sessions share the list."""

    async def run() -> dict[str, Reply]:
        transport = SmtpTransport(
            _settings(port, connections, **overrides), local_hostname="newsletter.example.org"
        )
        pool = [await transport.connect() for _ in range(connections)]
        todo = deque(messages)
        replies: dict[str, Reply] = {}

        async def carry(connection: object) -> None:
            assert isinstance(connection, SmtpConnection)
            while todo:
                message = todo.popleft()
                replies[message.rcpt] = await connection.send(message)

        await asyncio.gather(*(carry(c) for c in pool))
        for connection in pool:
            await connection.close()
        transport.executor.shutdown()
        return replies

    return asyncio.run(run())


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _assert_clean(handler: RecordingHandler, replies: dict[str, Reply]) -> None:
    """Nobody twice, nobody empty, no MAIL into an open transaction, and the ledger's view
    (a 250 reply) is exactly what the server stored."""
    counts = Counter(r.rcpt for r in handler.received)
    assert [rcpt for rcpt, n in counts.items() if n > 1] == []
    assert handler.empty_messages() == []
    assert [s.mails_after_refusal() for s in handler.sessions if s.mails_after_refusal()] == []
    assert {rcpt for rcpt, reply in replies.items() if reply.code == 250} == set(counts)
    assert [r for r in replies.values() if r.code == 503] == []


# --- point 3: RSET after a refused DATA; the next MAIL never meets "503 nested MAIL" -----------


@pytest.mark.parametrize("pipelining", [False, True], ids=["stepwise", "pipelined"])
@pytest.mark.parametrize("where", ["data-command", "final-dot"])
def test_a_server_refusing_every_other_data_loses_and_doubles_nobody(
    pipelining: bool, where: str
) -> None:
    handler = RecordingHandler(pipelining=pipelining)
    refusal = "554 5.6.0 Message refused here" if where == "final-dot" else "451 4.3.0 DATA refused"
    knob = handler.data_replies if where == "final-dot" else handler.data_command_replies
    knob.extend([refusal, ""] * 150)
    messages = _messages(300)
    with _sink(handler) as server:
        replies = _send(server.port, messages, connections=4)
    assert len(replies) == 300
    _assert_clean(handler, replies)
    refused = [r for r in replies.values() if r.code != 250]
    assert len(refused) == 150 and len(handler.received) == 150
    assert {(r.code, r.stage) for r in refused} == {(int(refusal[:3]), Stage.DATA)}
    assert {r.stage for r in replies.values() if r.code == 250} == {Stage.DATA}
    # RSET, not a new connection, cleared each refusal: the four sessions carried everything.
    assert len(handler.sessions) == 4


def test_a_refused_rset_drops_the_connection_instead_of_reusing_it() -> None:
    handler = RecordingHandler()
    handler.script("p0@example.org", "452 4.2.2 mailbox full")
    handler.rset_replies.append("500 5.5.1 RSET not now")  # and nothing is reset
    with _sink(handler) as server:
        replies = _send(server.port, _messages(3), connections=1)
    assert replies["p0@example.org"] == Reply(452, "4.2.2 mailbox full", Stage.RCPT)
    assert [r.code for r in replies.values()] == [452, 250, 250]
    _assert_clean(handler, replies)
    assert len(handler.sessions) == 2
    assert "RSET" in handler.sessions[0].commands()


# --- point 3, PIPELINING: a 354 after a refusal is never answered with an empty message --------


def test_a_pipelined_354_after_a_refusal_is_never_ended_with_a_bare_dot() -> None:
    # A sloppy server (smtp-sink keeps no transaction state) records refused senders and
    # recipients and opens DATA for them: a bare dot would deliver an empty message.
    handler = RecordingHandler(pipelining=True, keep_refused=True)
    handler.rcpt_reply = lambda rcpt: "550 5.7.1 Relaying denied" if rcpt[1] in "05" else None
    handler.mail_replies.extend(["451 4.3.0 sender check deferred"] * 3)
    messages = _messages(60)
    with _sink(handler) as server:
        replies = _send(server.port, messages, connections=2)
    _assert_clean(handler, replies)
    codes = Counter((r.code, r.stage) for r in replies.values())
    assert codes[(451, Stage.MAIL)] == 3
    assert codes[(550, Stage.RCPT)] + 3 + codes[(250, Stage.DATA)] == 60
    assert codes[(550, Stage.RCPT)] >= 10
    stored = {r.rcpt for r in handler.received}
    assert all(replies[rcpt].code == 250 for rcpt in stored)


def test_a_pipelined_refused_rcpt_whose_data_gets_503_keeps_the_connection() -> None:
    # A strict server (aiosmtpd, Postfix) answers the pipelined DATA of a refused RCPT with
    # 503 or 554: that 503 is not the answer, the RCPT refusal is; RSET, and go on.
    handler = RecordingHandler(pipelining=True)
    handler.rcpt_reply = lambda rcpt: "550 5.1.1 User unknown" if rcpt[1] in "05" else None
    messages = _messages(40)
    with _sink(handler) as server:
        replies = _send(server.port, messages, connections=2)
    _assert_clean(handler, replies)
    unknown = {rcpt for rcpt in replies if rcpt[1] in "05"}
    assert {replies[r] for r in unknown} == {Reply(550, "5.1.1 User unknown", Stage.RCPT)}
    assert {classify(replies[r]) for r in unknown} == {Verdict.BOUNCE}
    assert {r.rcpt for r in handler.received} == set(replies) - unknown
    assert len(handler.sessions) == 2
    assert any("503" in line for s in handler.sessions for line in s.lines)


# --- 503 is never a recipient's fault -----------------------------------------------------------


def test_a_503_is_sent_once_more_on_a_fresh_connection() -> None:
    handler = RecordingHandler()
    handler.mail_replies.append("503 5.5.1 Error: bad sequence of commands")
    with _sink(handler) as server:
        replies = _send(server.port, _messages(2), connections=1)
    assert [r.code for r in replies.values()] == [250, 250]
    _assert_clean(handler, replies)
    assert len(handler.sessions) == 2


def test_a_503_on_the_fresh_connection_too_is_returned_and_defers_the_row() -> None:
    handler = RecordingHandler()
    handler.mail_replies.extend(["503 5.5.1 Error: bad sequence of commands"] * 2)
    with _sink(handler) as server:
        replies = _send(server.port, _messages(1), connections=1)
    reply = replies["p0@example.org"]
    assert (reply.code, reply.stage, classify(reply)) == (503, Stage.MAIL, Verdict.DEFER)
    assert len(handler.sessions) == 2 and handler.received == []


# --- point 9: 421 closes one session; the message goes on a fresh one -------------------------


@pytest.mark.parametrize("pipelining", [False, True], ids=["stepwise", "pipelined"])
def test_a_per_session_message_limit_delivers_everyone_once_and_returns_no_421(
    pipelining: bool,
) -> None:
    handler = RecordingHandler(pipelining=pipelining, session_message_limit=20)
    with _sink(handler) as server:
        replies = _send(server.port, _messages(300), connections=4)
    assert Counter(r.code for r in replies.values()) == Counter({250: 300})
    _assert_clean(handler, replies)
    assert len(handler.received) == 300
    assert max(s.accepted for s in handler.sessions) == 20
    # 15 full sessions, plus at most one partly used per pooled connection.
    assert 15 <= len(handler.sessions) <= 19


def test_a_server_answering_421_to_every_connection_gets_421_after_one_reconnect() -> None:
    handler = RecordingHandler(greeting="421 4.3.2 Service shutting down, come back later")
    with _sink(handler) as server:
        replies = _send(server.port, _messages(3), connections=1)
    assert set(replies.values()) == {
        Reply(421, "4.3.2 Service shutting down, come back later", Stage.CONNECT)
    }
    assert len(handler.sessions) == 6  # two per message: the first, and exactly one more
    assert handler.received == []


def test_a_421_to_mail_on_the_fresh_connection_too_is_returned() -> None:
    handler = RecordingHandler(pipelining=True)
    handler.mail_replies.extend(["421 4.7.0 Too busy, closing"] * 2)
    with _sink(handler) as server:
        replies = _send(server.port, _messages(2), connections=1)
    first, second = replies.values()
    assert (first.code, first.stage, classify(first)) == (421, Stage.MAIL, Verdict.DEFER)
    assert second.code == 250
    assert len(handler.sessions) == 3
    assert [r.rcpt for r in handler.received] == ["p1@example.org"]


def test_a_pooled_session_the_server_closed_while_idle_is_reopened_for_the_message() -> None:
    handler = RecordingHandler(pipelining=True)
    with _sink(handler, idle_timeout=0.3) as server:

        async def run() -> list[Reply]:
            transport = SmtpTransport(_settings(server.port, 1), local_hostname="n.example.org")
            connection = await transport.connect()
            first, second = _messages(2)
            replies = [await connection.send(first)]
            # The server hangs up without a word (its idle timeout, a NAT, a load balancer).
            await asyncio.to_thread(_wait_for, lambda: handler.sessions[0].closed)
            replies.append(await connection.send(second))
            await connection.close()
            transport.executor.shutdown()
            return replies

        replies = asyncio.run(run())
    assert [r.code for r in replies] == [250, 250]
    assert len(handler.sessions) == 2 and len(handler.received) == 2


def test_a_hang_up_after_the_final_dot_is_not_sent_again() -> None:
    # The message may have been delivered: sending it again could double it.
    handler = RecordingHandler(pipelining=True)
    handler.hang_up_after_data.add("p0@example.org")
    with _sink(handler) as server:
        replies = _send(server.port, _messages(2), connections=1)
    first = replies["p0@example.org"]
    assert (first.code, first.stage) == (CONNECTION_FAULT, Stage.DATA)
    assert Counter(r.rcpt for r in handler.received) == Counter(
        {"p0@example.org": 1, "p1@example.org": 1}
    )


# --- connecting: the stage of a refused session; STARTTLS refused means no login in clear ------


def test_a_refused_starttls_never_logs_in_without_tls() -> None:
    handler = RecordingHandler(starttls_reply="454 4.7.0 TLS not available due to local problem")
    with _sink(handler, login=("newsletter", "secret")) as server:
        replies = _send(
            server.port,
            _messages(1),
            connections=1,
            security="starttls",
            username="newsletter",
            password="secret",
        )
    reply = replies["p0@example.org"]
    assert (reply.code, reply.stage) == (454, Stage.CONNECT)
    commands = [c for s in handler.sessions for c in s.commands()]
    assert "STARTTLS" in commands
    assert not any(c.startswith(("AUTH", "MAIL")) for c in commands)


def test_refused_authentication_is_a_connect_stage_pause() -> None:
    with _sink(RecordingHandler(), login=("newsletter", "right")) as server:
        replies = _send(
            server.port, _messages(1), connections=1, username="newsletter", password="wrong"
        )
    reply = replies["p0@example.org"]
    assert (reply.code, reply.stage, classify(reply)) == (535, Stage.CONNECT, Verdict.PAUSE)


# --- point 1, SMTPUTF8 half ---------------------------------------------------------------------


def _idn_messages() -> list[Outgoing]:
    body = "Subject: =?utf-8?b?5L2g5aW9?=\r\nTo: 用户@例子.中国\r\n\r\n你好\r\n".encode()
    return [
        Outgoing(SENDER, "before@example.org", b"Subject: a\r\n\r\na\r\n", "m0"),
        Outgoing(SENDER, IDN_LOCAL, body, "m1"),
        Outgoing(SENDER, "after@example.org", b"Subject: b\r\n\r\nb\r\n", "m2"),
    ]


@pytest.mark.parametrize("pipelining", [False, True], ids=["stepwise", "pipelined"])
def test_a_non_ascii_address_goes_with_smtputf8_when_the_server_offers_it(
    pipelining: bool,
) -> None:
    handler = RecordingHandler(pipelining=pipelining)
    messages = _idn_messages()
    with _sink(handler, smtputf8=True) as server:
        replies = _send(server.port, messages, connections=1)
    assert [r.code for r in replies.values()] == [250, 250, 250]
    options = {r.rcpt: r.options for r in handler.received}
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(options[IDN_LOCAL])
    assert "SMTPUTF8" not in options["before@example.org"] + options["after@example.org"]
    [idn] = [r for r in handler.received if r.rcpt == IDN_LOCAL]
    assert idn.data == messages[1].data
    assert len(handler.sessions) == 1


@pytest.mark.parametrize("pipelining", [False, True], ids=["stepwise", "pipelined"])
def test_a_non_ascii_address_is_unsendable_without_smtputf8_and_touches_no_wire(
    pipelining: bool,
) -> None:
    handler = RecordingHandler(pipelining=pipelining)
    with _sink(handler, smtputf8=False) as server:
        replies = _send(server.port, _idn_messages(), connections=1)
    assert replies[IDN_LOCAL] == Reply(
        UNSENDABLE,
        f"the SMTP server does not offer SMTPUTF8, which the address <{IDN_LOCAL}> needs",
        Stage.MAIL,
    )
    assert classify(replies[IDN_LOCAL]) is Verdict.FAIL
    assert [r.rcpt for r in handler.received] == ["before@example.org", "after@example.org"]
    [session] = handler.sessions  # the session was not spoiled
    mails = [c for c in session.commands() if c.startswith("MAIL")]
    assert len(mails) == 2 and all(c.isascii() for c in session.commands())


def test_a_non_ascii_sender_needs_smtputf8_too() -> None:
    handler = RecordingHandler()
    outgoing = Outgoing("通讯@例子.中国", "p0@example.org", b"Subject: x\r\n\r\nx\r\n", "m0")
    with _sink(handler, smtputf8=False) as server:
        replies = _send(server.port, [outgoing], connections=1)
    reply = replies["p0@example.org"]
    assert (reply.code, reply.stage) == (UNSENDABLE, Stage.MAIL)
    assert "<通讯@例子.中国>" in reply.text
    assert not any(c.startswith("MAIL") for s in handler.sessions for c in s.commands())


# --- Postfix's smtp-sink (the server the issue measured with) ---------------------------------


def _smtp_sink() -> str:
    found = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin")
    if found:
        return found
    if IN_CI:
        pytest.fail("CI=true but Postfix's smtp-sink is not installed (apt-get install postfix)")
    pytest.skip("Postfix's smtp-sink is not installed (apt-get install postfix)")


@contextmanager
def _postfix_sink(*flags: str) -> Iterator[tuple[int, Path]]:
    """smtp-sink on a free loopback port, dumping each transaction it accepts into a folder."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    # Run as root, smtp-sink drops to nobody, who cannot enter pytest's private tmp_path.
    dumps = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    if user:
        shutil.chown(dumps, "nobody")
    command = [_smtp_sink(), *user, *flags, "-d", f"{dumps}/%M.", f"127.0.0.1:{port}", "64"]
    process = subprocess.Popen(command)  # its complaints go to the test's captured stderr
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, f"smtp-sink exited: {command}"
                assert time.monotonic() < deadline, "smtp-sink did not start"
                time.sleep(0.05)
        yield port, dumps
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(dumps, ignore_errors=True)


def test_postfix_smtp_sink_refusing_data_fails_nobody_with_503() -> None:
    # `-r DATA`: every DATA gets 450, and the transaction stays open (the issue: 148 of 300 rows
    # failed for good with "503 5.5.1 nested MAIL", none ever sent).
    with _postfix_sink("-r", "DATA") as (port, dumps):
        replies = _send(port, _messages(100), connections=4)
        assert list(dumps.iterdir()) == []
    assert {(r.code // 100, r.stage) for r in replies.values()} == {(4, Stage.DATA)}
    assert {classify(r) for r in replies.values()} == {Verdict.RETRY}


def test_postfix_smtp_sink_pipelined_delivers_each_message_once_and_whole() -> None:
    messages = _messages(100)
    with _postfix_sink() as (port, dumps):
        replies = _send(port, messages, connections=4)
        _wait_for(lambda: len(list(dumps.iterdir())) == 100)
        dumped = [p.read_bytes() for p in dumps.iterdir()]
    assert {(r.code, r.stage) for r in replies.values()} == {(250, Stage.DATA)}
    for message in messages:
        # Each dump holds the envelope (X-Rcpt-Args: <...>) and then the message as sent.
        [hit] = [d for d in dumped if f"X-Rcpt-Args: <{message.rcpt}>\n".encode() in d]
        assert message.data.replace(b"\r\n", b"\n") in hit.replace(b"\r\n", b"\n")


# --- end to end: `newsletter send` through a relay with a per-session limit (issue point 9) ----


def test_send_through_a_relay_with_a_per_session_limit_finishes_with_everyone_once(
    runner: CliRunner, instance: Instance
) -> None:
    config = ["--config", str(instance.config)]
    for args in (
        ["subscribers", "import", str(bundled_data_dir() / "lists")],
        ["issue", "import", str(sample_issue_path())],
    ):
        result = runner.invoke(app, [*config, *args])
        assert result.exit_code == 0, result.output
    handler = RecordingHandler(pipelining=True, session_message_limit=5)
    with _sink(handler) as server:
        result = runner.invoke(app, [*config, "send", "2020-01", "--transport", "smtp",
                                     "--smtp-host", "127.0.0.1", "--smtp-port", str(server.port),
                                     "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = ledger_by_email(instance.settings)
    assert len(rows) >= 60
    # Before: BURST_421 paused the campaign after a few sessions' worth of messages.
    assert (report["state"], report["sent"], report["failed"]) == ("finished", len(rows), 0)
    assert Counter(r.rcpt for r in handler.received) == Counter(set(rows))
    assert {row.state for row in rows.values()} == {DeliveryState.SENT}
    assert len(handler.sessions) >= len(rows) // 5
