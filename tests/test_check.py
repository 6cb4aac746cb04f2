"""`newsletter check` names every fault of a sending setup and passes a right one; a send by
smtp refuses the faults that would hurt readers or the domain."""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance, cli, invoke, load_sample, make_instance


def _instance(tmp_path: Path, runner: CliRunner, **changes: str) -> Instance:
    """A SQLite instance with top-level keys and `section.key` values set in its file."""
    instance = make_instance(tmp_path, f"sqlite:///{tmp_path / 'newsletter.db'}")
    text = instance.config.read_text(encoding="utf-8")
    for dotted, value in changes.items():
        section, _, key = dotted.rpartition("__")
        start = text.index(f"\n[{section}]\n") if section else 0  # top-level keys come first
        written = value if value.isdigit() else f'"{value}"'
        head, tail = text[:start], text[start:]
        tail, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {written}", tail, count=1)
        assert found, dotted
        text = head + tail
    instance.config.write_text(text, encoding="utf-8")
    cli(runner, instance, "init")
    return instance


def _key(folder: Path, bits: int = 2048) -> tuple[Path, str]:
    key = folder / f"dkim-{bits}.pem"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(key), str(bits)], check=True, capture_output=True
    )
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return key, base64.b64encode(public).decode()


def _check(runner: CliRunner, instance: Instance, *args: str) -> tuple[int, dict[str, Any]]:
    result = invoke(runner, instance, "check", "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def _levels(report: dict[str, Any]) -> dict[str, str]:
    return {f["topic"]: f["level"] for f in report["findings"]}


def test_a_fresh_instance_passes_with_warnings_and_gets_its_dns_records(
    tmp_path: Path, runner: CliRunner
) -> None:
    instance = _instance(tmp_path, runner)
    code, report = _check(runner, instance)
    assert code == 0 and report["ok"] is True
    assert _levels(report) == {"base_url": "warning", "dkim": "warning"}
    names = {(r["name"], r["type"]) for r in report["dns"]}
    assert ("_dmarc.example.org", "TXT") in names  # the organisational domain of From
    assert any(r["value"].startswith("v=spf1") for r in report["dns"])
    text = cli(runner, instance, "check")
    assert "set [dkim] domain, selector and key_file" in text  # printed as written, not as markup


def test_every_fault_is_named_and_an_smtp_send_refuses_before_touching_the_ledger(
    tmp_path: Path, runner: CliRunner, smtp_server: LoopbackController
) -> None:
    instance = _instance(
        tmp_path, runner, base_url="http://news.example.org", dkim__domain="newsletter.example.org"
    )
    code, report = _check(runner, instance)
    assert code == 1 and report["ok"] is False
    messages = {f["topic"]: f["message"] for f in report["findings"] if f["level"] == "error"}
    assert "not https" in messages["base_url"] and "RFC 8058" in messages["base_url"]
    assert "dkim.selector, dkim.key_file empty" in messages["dkim"]
    load_sample(runner, instance)
    result = invoke(runner, instance, "send", "2020-01", "--transport", "smtp",
                    "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_server.port))  # fmt: skip
    assert result.exit_code == 1
    assert "not sending by smtp" in result.stderr and "base_url" in result.stderr
    assert "[dkim] is partly set" in result.stderr
    assert smtp_server.handler.received == []
    assert json.loads(cli(runner, instance, "campaign", "list", "--json")) == []  # nothing opened


def test_a_right_setup_passes_and_prints_the_dkim_record_of_its_key(
    tmp_path: Path, runner: CliRunner, smtp_server: LoopbackController
) -> None:
    key, public = _key(tmp_path)
    instance = _instance(
        tmp_path, runner, base_url="https://newsletter.example.org",
        dkim__domain="newsletter.example.org", dkim__selector="s2026", dkim__key_file=str(key),
        smtp__host="127.0.0.1", smtp__port=str(smtp_server.port),
    )  # fmt: skip
    code, report = _check(runner, instance, "--probe")
    assert code == 0, report
    load_sample(runner, instance)
    sent = invoke(runner, instance, "send", "2020-01", "--transport", "smtp")
    assert sent.exit_code == 0 and "without a DKIM signature" not in sent.stderr
    assert set(_levels(report).values()) == {"ok"} and "smtp" in _levels(report)
    dkim = [r for r in report["dns"] if r["name"] == "s2026._domainkey.newsletter.example.org"]
    assert dkim and dkim[0]["value"] == f"v=DKIM1; k=rsa; p={public}"


def test_an_smtp_send_without_dkim_is_warned(
    tmp_path: Path, runner: CliRunner, smtp_server: LoopbackController
) -> None:
    instance = _instance(tmp_path, runner)
    load_sample(runner, instance)
    sent = invoke(runner, instance, "send", "2020-01", "--transport", "smtp",
                  "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_server.port))  # fmt: skip
    assert sent.exit_code == 0, sent.output
    assert "warning: mail goes out without a DKIM signature" in sent.stderr
    assert smtp_server.handler.received


def test_a_short_key_a_misaligned_domain_and_an_unreachable_relay_are_each_named(
    tmp_path: Path, runner: CliRunner
) -> None:
    key, _ = _key(tmp_path, 1024)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens once the socket closes
    instance = _instance(
        tmp_path, runner, base_url="https://newsletter.example.org",
        dkim__domain="mailer.example.net", dkim__selector="s1", dkim__key_file=str(key),
        smtp__host="127.0.0.1", smtp__port=str(closed),
    )  # fmt: skip
    code, report = _check(runner, instance, "--probe")
    assert code == 1
    errors = [f["message"] for f in report["findings"] if f["level"] == "error"]
    assert any("1024 bits" in m for m in errors)
    assert any("DMARC" in m and "example.org" in m for m in errors)
    assert any("cannot reach the relay" in m for m in errors)
