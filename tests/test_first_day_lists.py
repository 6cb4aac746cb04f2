"""A newcomer's first day with the lists and links (issue 10): nothing suppressed or handed over
by accident, filters and tags that tell the truth, digests that show every chosen sector, mail
that greets people by the name staff gave, logs that hold no capability."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import subprocess
import sys
import threading
import time
import warnings
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import uvicorn
from sqlmodel import Session, col, select
from typer.testing import CliRunner
from uvicorn.logging import AccessFormatter

from newsletter.mail.links import recipient_links
from newsletter.models import AuditEvent, Subscriber, utcnow
from newsletter.testing.sink import LoopbackController
from newsletter.tokens import confirm_token
from newsletter.web import create_app
from tests.conftest import Instance, cli, database, fails, invoke

with warnings.catch_warnings():
    # Starlette's test client warns when it falls back from `httpx2` to `httpx`.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

BERLIN = "de-berlin"
LI = "li.wei@mission-berlin.example.org"
TYPO = "li.wie@mission-berlin.example.org"


def _audit(instance: Instance, action: str) -> list[AuditEvent]:
    with database(instance) as engine, Session(engine) as session:
        query = select(AuditEvent).where(AuditEvent.action == action).order_by(col(AuditEvent.id))
        return list(session.exec(query).all())


def _people(instance: Instance) -> dict[str, str]:
    rows = json.loads(cli(CliRunner(), instance, "subscribers", "list", "--json"))
    return {r["email"]: r["status"] for r in rows}


# --- 8. remove and unsuppress --------------------------------------------------------------------


def test_removing_an_address_not_on_the_list_fails_and_suppresses_nothing(
    runner: CliRunner, instance: Instance
) -> None:
    cli(runner, instance, "subscribers", "add", LI, "--embassy", BERLIN, "--name", "李伟")

    error = fails(runner, instance, "subscribers", "remove", TYPO, "--yes")
    assert f"subscriber '{TYPO}' not found" in error
    assert f"newsletter subscribers remove {TYPO} --suppress" in error
    # The typo was not suppressed: the address can still be added, and Li is untouched.
    cli(runner, instance, "subscribers", "add", TYPO, "--embassy", BERLIN)
    assert _people(instance) == {LI: "active", TYPO: "active"}
    assert _audit(instance, "suppressed") == []


def test_suppress_then_unsuppress_an_address_with_the_reason_audited(
    runner: CliRunner, instance: Instance
) -> None:
    asked = "never.mail@example.org"
    done = invoke(runner, instance, "subscribers", "remove", asked, "--suppress", "--yes")
    assert done.exit_code == 0, done.output
    assert "not on the list; suppressed" in done.stderr
    refused = fails(runner, instance, "subscribers", "add", asked, "--embassy", BERLIN)
    assert "on the suppression list" in refused and "subscribers unsuppress" in refused
    [suppressed] = _audit(instance, "suppressed")
    assert asked not in suppressed.detail  # only the keyed hash names them
    assert suppressed.actor.startswith("cli:")

    # The same again changes nothing and says so.
    again = invoke(runner, instance, "subscribers", "remove", asked, "--yes")
    assert again.exit_code == 0 and "already erased" in again.stderr

    assert "--reason" in fails(runner, instance, "subscribers", "unsuppress", asked)
    lifted = invoke(
        runner, instance, "subscribers", "unsuppress", asked, "--reason", "asked to come back"
    )
    assert lifted.exit_code == 0, lifted.output
    assert f"{asked} is off the suppression list" in lifted.stderr
    [event] = _audit(instance, "unsuppressed")
    assert asked in event.detail and "asked to come back" in event.detail
    assert event.actor.startswith("cli:") and event.via == "cli"

    cli(runner, instance, "subscribers", "add", asked, "--embassy", BERLIN)
    assert _people(instance) == {asked: "active"}
    twice = fails(runner, instance, "subscribers", "unsuppress", asked, "--reason", "twice")
    assert f"suppressed address '{asked}' not found" in twice


def test_an_erased_person_who_comes_back_can_be_imported_again(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    listed = tmp_path / f"{BERLIN}.csv"
    listed.write_text(f"email,name,sectors\n{LI},李伟,ai\n", encoding="utf-8")
    cli(runner, instance, "subscribers", "import", str(listed))
    cli(runner, instance, "subscribers", "remove", LI, "--yes")
    assert "suppressed" in invoke(runner, instance, "subscribers", "import", str(listed)).stderr
    assert _people(instance) == {}

    cli(runner, instance, "subscribers", "unsuppress", LI, "--reason", "letter of 2 December")
    cli(runner, instance, "subscribers", "import", str(listed))
    assert _people(instance) == {LI: "active"}


# --- 9. handover once --------------------------------------------------------------------------


def test_a_second_handover_from_the_same_address_is_refused_naming_the_first(
    runner: CliRunner, instance: Instance
) -> None:
    first, second = "zhao.lei@mission-berlin.example.org", "wu.xin@mission-berlin.example.org"
    cli(runner, instance, "subscribers", "add", LI, "--embassy", BERLIN, "--sectors", "ai")
    cli(runner, instance, "subscribers", "handover", LI, first, "--no-mail")

    error = fails(runner, instance, "subscribers", "handover", LI, second, "--no-mail")
    with database(instance) as engine, Session(engine) as session:
        successor = session.exec(select(Subscriber).where(Subscriber.email == first)).one()
    assert f"already handed over on {successor.created_at:%Y-%m-%d} to {first}" in error
    assert second not in _people(instance)
    assert _people(instance) == {LI: "unsubscribed", first: "pending"}

    # A successor removed as a mistake frees the post for the right one.
    cli(runner, instance, "subscribers", "remove", first, "--yes")
    cli(runner, instance, "subscribers", "handover", LI, second, "--no-mail")
    assert _people(instance) == {LI: "unsubscribed", second: "pending"}


# --- 13. filters -------------------------------------------------------------------------------


def test_list_filters_naming_nothing_are_errors_as_for_export(
    runner: CliRunner, instance: Instance
) -> None:
    cli(runner, instance, "subscribers", "add", LI, "--embassy", BERLIN, "--sectors", "ai")
    for option, value, hint in (
        ("--embassy", "xx-nowhere", "newsletter embassies list"),
        ("--sector", "quantum-gravity", "newsletter sectors list"),
    ):
        listed = fails(runner, instance, "subscribers", "list", option, value)
        exported = fails(runner, instance, "subscribers", "export", option, value)
        assert listed == exported
        assert f"'{value}' not found" in listed and hint in listed
    bad_status = invoke(runner, instance, "subscribers", "list", "--status", "gone")
    assert bad_status.exit_code == 2
    assert "'gone' is not one of" in bad_status.stderr and "active" in bad_status.stderr
    assert json.loads(cli(runner, instance, "subscribers", "list", "--sector", "ai", "--json"))


# --- 15. lists as Excel on Chinese Windows saves them ---------------------------------------------

LIST = "email,name,title,sectors,language\n{email},李伟,科技参赞,{sectors},zh\n"


def _sectors_of(instance: Instance, email: str) -> list[str]:
    shown = json.loads(cli(CliRunner(), instance, "subscribers", "show", email, "--json"))
    return sorted(shown["sectors"])


def test_import_reads_gb18030_and_utf8_with_bom_and_full_width_separators(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    folder = tmp_path / "lists"
    folder.mkdir()
    gbk = "gbk@mission-berlin.example.org"
    (folder / "de-berlin.csv").write_bytes(
        LIST.format(email=gbk, sectors="ai；big-data-cloud").encode("gbk")
    )
    bom = "bom@mission-paris.example.org"
    (folder / "fr-paris.csv").write_bytes(
        LIST.format(email=bom, sectors="ai，biomedicine、new-materials").encode("utf-8-sig")
    )
    done = invoke(runner, instance, "subscribers", "import", str(folder))
    assert done.exit_code == 0, done.output
    assert "2 added" in done.stderr
    assert f"read {folder / 'de-berlin.csv'} as GB18030" in done.stderr
    assert "fr-paris.csv as" not in done.stderr  # UTF-8, with or without BOM, needs no word
    people = json.loads(cli(runner, instance, "subscribers", "list", "--json"))
    assert {p["email"]: p["name"] for p in people} == {gbk: "李伟", bom: "李伟"}
    assert _sectors_of(instance, gbk) == ["ai", "big-data-cloud"]
    assert _sectors_of(instance, bom) == ["ai", "biomedicine", "new-materials"]
    # --sectors takes what an input method types as well.
    cli(runner, instance, "subscribers", "add", LI, "--embassy", BERLIN, "--sectors", "ai；talent")
    assert _sectors_of(instance, LI) == ["ai", "talent"]


def test_a_list_in_no_encoding_we_read_is_refused_with_what_to_save(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    listed = tmp_path / "de-berlin.csv"
    listed.write_bytes(LIST.format(email=LI, sectors="ai").encode("utf-16"))
    assert 'save the list as "CSV UTF-8"' in fails(
        runner, instance, "subscribers", "import", str(listed)
    )
    listed.write_bytes(b"email,name\n" + LI.encode() + b",\x80\xff\n")
    error = fails(runner, instance, "subscribers", "import", str(listed))
    assert "neither UTF-8 nor GB18030" in error
    assert _people(instance) == {}


def _at_a_terminal(*args: str) -> tuple[int, str]:
    """Run `newsletter ARGS` with stdout and stderr on a pseudo-terminal, as a person would."""
    main, child = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    command = [sys.executable, "-c", "from newsletter.cli import main; main()", *args]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=child, stderr=child, env=env
    )
    os.close(child)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    return process.wait(timeout=120), seen.decode("utf-8", "replace")


def test_a_long_import_shows_progress_at_a_terminal_only(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    listed = tmp_path / "de-berlin.csv"
    rows = "".join(f"p{n}@mission-berlin.example.org,人{n},,ai,zh\n" for n in range(1200))
    listed.write_text("email,name,title,sectors,language\n" + rows, encoding="utf-8")

    status, screen = _at_a_terminal("--config", str(instance.config), "subscribers", "import",
                                    str(listed), "--dry-run")  # fmt: skip
    assert status == 0, screen
    assert "importing" in screen and "1200/1200" in screen
    assert "would import: 1200 added" in screen

    piped = invoke(runner, instance, "subscribers", "import", str(listed))
    assert piped.exit_code == 0 and "imported: 1200 added" in piped.stderr
    assert "importing" not in piped.output and "1200/1200" not in piped.output


# --- 12. tagging ---------------------------------------------------------------------------------

SEED = Path(__file__).parent / "fixtures" / "kjcxsd-2020-01.txt"


def test_every_sector_the_seed_names_is_tagged_and_weaker_ones_are_comments(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    reviewed = tmp_path / "2020-01.yaml"
    cli(runner, instance, "issue", "convert", str(SEED), "-o", str(reviewed))
    text = reviewed.read_text("utf-8")
    demand = text[text.index("title: 北京发布30个应用场景建设项目") :].split("\n  - id:")[0]
    sectors = demand[demand.index("sectors:") : demand.index("regions:")]
    tagged = [line.split()[1] for line in sectors.splitlines() if line.startswith("      - ")]
    # 主要聚焦人工智能、5G、物联网、大数据、区块链、生命科学、新材料等领域: each one named is a tag.
    for code in ("ai", "5g-iot", "big-data-cloud", "blockchain", "biomedicine", "new-materials"):
        assert code in tagged, (code, sectors)
    assert "# weaker candidates, not tagged" in sectors
    assert "#   - innovation-policy  # keyword: 行动方案 (1×)" in sectors
    assert "innovation-policy" not in tagged

    cli(runner, instance, "issue", "import", str(reviewed))
    reader = "ai.reader@mission-berlin.example.org"
    cli(runner, instance, "subscribers", "add", reader, "--embassy", BERLIN,
        "--sectors", "ai,big-data-cloud")  # fmt: skip
    explained = json.loads(cli(runner, instance, "explain", "2020-01", "--subscriber", reader,
                               "--json"))  # fmt: skip
    [item] = [d for d in explained if d["item"] == "demand-1"]
    assert item["included"] and set(item["matched"]) == {"ai", "big-data-cloud"}


# --- 11. every sector of the reader's in the digest ----------------------------------------------

SMALL_ISSUE = """\
publication: 中国科技创新速递
title_en: China S&T Innovation Express
year: 2020
number: 2
items:
  - id: chips-ai
    section: research
    title: 人工智能芯片取得进展
    body: 正文。
    sectors: [ai]
  - id: robots
    section: research
    title: 软体机器人
    body: 正文。
    sectors: [robotics]
"""


def _preview(runner: CliRunner, instance: Instance, email: str, out: Path, *text: str) -> str:
    result = invoke(runner, instance, "preview", "2020-02", "--subscriber", email, "-o",
                    str(out), *text)  # fmt: skip
    assert result.exit_code == 0, result.output
    return out.read_text("utf-8")


def test_the_digest_lists_all_the_readers_sectors_marking_those_in_this_issue(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    issue = tmp_path / "2020-02.yaml"
    issue.write_text(SMALL_ISSUE, encoding="utf-8")
    cli(runner, instance, "issue", "import", str(issue))
    zh, en, none = (f"{who}@mission-berlin.example.org" for who in ("zh", "en", "none"))
    for email, language, sectors in (
        (zh, "zh", "ai,big-data-cloud,talent"),
        (en, "en", "ai,big-data-cloud"),
        (none, "zh", "talent,big-data-cloud"),
    ):
        cli(runner, instance, "subscribers", "add", email, "--embassy", BERLIN, "--sectors",
            sectors, "--language", language)  # fmt: skip

    text = _preview(runner, instance, zh, tmp_path / "zh.txt", "--text")
    assert "关注领域：人工智能✓、大数据与云计算、科技人才（✓ 本期有相关内容）" in text
    html = _preview(runner, instance, zh, tmp_path / "zh.html")
    assert "<strong>人工智能✓</strong>、大数据与云计算、科技人才" in html
    # The subject names what the issue brings them, and says they have more.
    subject = invoke(runner, instance, "preview", "2020-02", "--subscriber", zh, "-o",
                     str(tmp_path / "x.html")).stderr  # fmt: skip
    assert "2020年第2期｜人工智能等" in subject

    english = _preview(runner, instance, en, tmp_path / "en.txt", "--text")
    assert (
        "Your sectors: Artificial intelligence ✓, Big data & cloud computing (✓ in this issue)"
        in " ".join(english.split())  # the text part wraps at 72 columns
    )

    unmatched = _preview(runner, instance, none, tmp_path / "none.txt", "--text")
    assert "关注领域：大数据与云计算、科技人才（本期没有这些领域的内容）" in unmatched


def test_readers_with_the_same_items_but_other_sectors_each_get_their_own_list(
    runner: CliRunner, instance: Instance, tmp_path: Path, smtp_server: LoopbackController
) -> None:
    issue = tmp_path / "2020-02.yaml"
    issue.write_text(SMALL_ISSUE, encoding="utf-8")
    cli(runner, instance, "issue", "import", str(issue))
    narrow, wide = "narrow@mission-berlin.example.org", "wide@mission-berlin.example.org"
    cli(runner, instance, "subscribers", "add", narrow, "--embassy", BERLIN, "--sectors", "ai")
    cli(runner, instance, "subscribers", "add", wide, "--embassy", BERLIN, "--sectors",
        "ai,big-data-cloud")  # fmt: skip
    sent = json.loads(cli(runner, instance, "send", "2020-02", "--transport", "smtp",
                          "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_server.port),
                          "--json"))  # fmt: skip
    assert sent["sent"] == 2
    texts = {}
    for got in smtp_server.handler.received:
        body = got.parsed().get_body(("plain",))
        assert body is not None
        texts[got.rcpt] = body.get_content()
    # Both get the AI item alone; each reads their own sectors (one rendered digest each).
    assert "关注领域：人工智能\r\n" in texts[narrow]  # the text part's lines end CRLF
    assert "关注领域：人工智能✓、大数据与云计算（✓ 本期有相关内容）" in texts[wide]


# --- 15. confirmation links and the names in subscription mail -----------------------------------


def _smtp_env(server: LoopbackController) -> dict[str, str]:
    return {"NEWSLETTER_TRANSPORT": "smtp", "NEWSLETTER_SMTP__HOST": "127.0.0.1",
            "NEWSLETTER_SMTP__PORT": str(server.port)}  # fmt: skip


def _mail_to(server: LoopbackController, address: str) -> EmailMessage:
    [got] = [r for r in server.handler.received if r.rcpt == address]
    message: EmailMessage = got.parsed()
    return message


def _plain(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_invitations_greet_people_by_the_name_staff_gave(
    runner: CliRunner, instance: Instance, tmp_path: Path, smtp_server: LoopbackController
) -> None:
    env = _smtp_env(smtp_server)
    listed = tmp_path / f"{BERLIN}.csv"
    listed.write_text(f"email,name\n{LI},李伟\n", encoding="utf-8")
    cli(runner, instance, "subscribers", "import", str(listed), "--require-confirmation", env=env)
    successor = "zhao.lei@mission-berlin.example.org"
    cli(runner, instance, "subscribers", "handover", LI, successor, "--name", "赵磊", env=env)

    for address, name in ((LI, "李伟"), (successor, "赵磊")):
        message = _mail_to(smtp_server, address)
        assert message["To"].addresses[0].display_name == name
        text = _plain(message)
        assert f"尊敬的{name}：/ Dear {name}," in text and "/confirm/" in text
        html_part = message.get_body(("html",))
        assert html_part is not None and f"尊敬的{name}" in html_part.get_content()


def _client(instance: Instance) -> TestClient:
    return TestClient(create_app(instance.settings))


def test_a_name_typed_into_the_public_form_is_never_used_in_mail(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    settings = instance.settings.overridden(
        {"transport": "smtp", "smtp.host": "127.0.0.1", "smtp.port": smtp_server.port}
    )
    with TestClient(create_app(settings)) as client:
        page = client.get("/subscribe")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        form = {"email": "stranger@example.org", "name": "Your boss", "embassy": BERLIN,
                "sectors": ["ai"], "language": "zh", "csrf": csrf.group(1)}  # fmt: skip
        assert client.post("/subscribe", data=form).status_code == 200
    message = _mail_to(smtp_server, "stranger@example.org")
    assert "Your boss" not in message.as_string()
    assert "您好 / Hello," in _plain(message)


def test_a_confirmation_link_opened_again_says_already_confirmed(
    runner: CliRunner, instance: Instance, tmp_path: Path, smtp_server: LoopbackController
) -> None:
    listed = tmp_path / f"{BERLIN}.csv"
    listed.write_text(f"email,name\n{LI},李伟\n", encoding="utf-8")
    cli(runner, instance, "subscribers", "import", str(listed), "--require-confirmation",
        env=_smtp_env(smtp_server))  # fmt: skip
    found = re.search(r"https?://\S+?(/confirm/\S+)", _plain(_mail_to(smtp_server, LI)))
    assert found is not None
    link = found.group(1)
    with _client(instance) as client:
        first = client.get(link)
        assert "确认订阅" in first.text and "<form" in first.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', first.text)
        assert csrf is not None
        done = client.post(link, data={"csrf": csrf.group(1)})
        assert "Subscription confirmed" in done.text
        assert _people(instance) == {LI: "active"}

        again = client.get(link)
        assert again.status_code == 200
        assert "Already confirmed" in again.text and "订阅早已确认" in again.text
        assert "<form" not in again.text  # nothing to press
        posted_again = client.post(link, data={"csrf": csrf.group(1)})
        assert "Already confirmed" in posted_again.text
    confirmed = [e for e in _audit(instance, "status") if e.new_status == "active"]
    assert len(confirmed) == 1  # the second visit changed nothing


# --- 16. access logs -----------------------------------------------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_access_logs_name_the_route_never_the_token(instance: Instance, runner: CliRunner) -> None:
    cli(runner, instance, "subscribers", "add", LI, "--embassy", BERLIN)
    settings = instance.settings
    with database(instance) as engine, Session(engine) as session:
        key = session.exec(select(Subscriber.token_key).where(Subscriber.email == LI)).one()
    unsubscribe, preferences, _ = recipient_links(settings, key)
    confirm = f"/confirm/{confirm_token(settings.secret, key, now=utcnow())}"
    tokens = [urlsplit(u).path.rsplit("/", 1)[1] for u in (unsubscribe, preferences)]

    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="info")
    server = uvicorn.Server(config)
    captured = _Lines()
    captured.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))
    logging.getLogger("uvicorn.access").addHandler(captured)  # after uvicorn set up its logging
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base) as http:
            assert http.get(urlsplit(preferences).path, params={"saved": "1"}).status_code == 200
            assert http.get(confirm).status_code == 200
            one_click = http.post(
                urlsplit(unsubscribe).path, data={"List-Unsubscribe": "One-Click"}
            )
            assert one_click.status_code == 200
        deadline = time.monotonic() + 10
        while len(captured.lines) < 3:  # the access line is written as the response ends
            assert time.monotonic() < deadline, captured.lines
            time.sleep(0.02)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        logging.getLogger("uvicorn.access").removeHandler(captured)
    log = "\n".join(captured.lines)
    assert '"POST /unsubscribe/{token} HTTP/1.1" 200' in log
    assert '"GET /preferences/{token} HTTP/1.1" 200' in log
    assert '"GET /confirm/{token} HTTP/1.1" 200' in log
    for token in (*tokens, confirm.rsplit("/", 1)[1]):
        assert token not in log
    assert "saved=1" not in log  # the query after a token goes with it
    assert _people(instance) == {LI: "unsubscribed"}  # the requests were real
