"""A diplomat's path in Debian's chromium, at 320 px, against `newsletter serve` on 127.0.0.1."""

from __future__ import annotations

import email
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from tests.chromium import CHROMIUM, CHROMIUM_ARGS, WIDTH
from tests.chromium import fits as _fits
from tests.chromium import need_chromium as _need_chromium
from tests.conftest import Instance, make_instance
from tests.processes import local_base_url, serving

pytestmark = pytest.mark.browser


@dataclass
class Server:
    base_url: str
    instance: Instance


@pytest.fixture
def server(tmp_path: Path, runner: CliRunner) -> Iterator[Server]:
    _need_chromium()
    instance = make_instance(tmp_path, f"sqlite:///{tmp_path / 'newsletter.db'}")
    base_url = local_base_url(instance)
    result = runner.invoke(app, ["--config", str(instance.config), "init"])
    assert result.exit_code == 0, result.output
    with serving(instance, base_url, tmp_path / "serve.log"):
        yield Server(base_url, instance)


def _confirm_link(instance: Instance, address: str) -> str:
    outbox = instance.settings.path(instance.settings.outbox)
    deadline = time.monotonic() + 15  # the mail goes out after the page has answered
    while time.monotonic() < deadline:
        for file in outbox.glob("*.eml") if outbox.is_dir() else ():
            message = email.message_from_bytes(file.read_bytes(), policy=policy.default)
            if address in str(message["To"]):
                text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
                found = re.search(r"https?://\S+/confirm/\S+", text)
                assert found, text
                return found.group(0)
        time.sleep(0.2)
    pytest.fail(f"no confirmation mail to {address} in {outbox}")


def _show(runner: CliRunner, instance: Instance, address: str) -> dict[str, Any]:
    result = runner.invoke(
        app, ["--config", str(instance.config), "subscribers", "show", address, "--json"]
    )
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_subscribe_confirm_preferences_unsubscribe_in_chromium(
    server: Server, runner: CliRunner
) -> None:
    from playwright.sync_api import sync_playwright

    address = "browser.user@example.org"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 640})
            page.goto(f"{server.base_url}/subscribe")
            _fits(page)
            page.fill("#email", address)
            page.fill("#name", "测试 <b>用户</b> \u200fعمر")
            page.select_option("#embassy", "de-berlin")
            page.check("input[name=sectors][value=ai]")
            page.check("input[name=language][value=en]")
            page.click("button[type=submit]")
            page.wait_for_selector("text=请查收邮件")
            _fits(page)
            assert _show(runner, server.instance, address)["status"] == "pending"

            page.goto(_confirm_link(server.instance, address))
            _fits(page)
            assert _show(runner, server.instance, address)["status"] == "pending"
            page.click("button[type=submit]")
            page.wait_for_selector("text=订阅已确认")
            assert _show(runner, server.instance, address)["status"] == "active"

            page.click("text=更改订阅设置")
            page.wait_for_selector("text=订阅设置")
            _fits(page)
            assert page.is_checked("input[name=sectors][value=ai]")
            page.uncheck("input[name=sectors][value=ai]")
            page.check("input[name=sectors][value=biomedicine]")
            page.check("input[name=language][value=zh]")
            page.click("button[type=submit]")
            page.wait_for_selector("text=已保存")
            shown = _show(runner, server.instance, address)
            assert (shown["sectors"], shown["language"]) == (["biomedicine"], "zh")

            page.click("text=退订 Unsubscribe")
            page.wait_for_selector("button:has-text('退订')")
            _fits(page)
            page.click("button[type=submit]")
            page.wait_for_selector("text=已退订")
        finally:
            browser.close()

    shown = _show(runner, server.instance, address)
    assert shown["status"] == "unsubscribed" and shown["name"] == "测试 <b>用户</b> \u200fعمر"
    assert [(e["action"], e["new_status"], e["via"]) for e in shown["history"]] == [
        ("created", "pending", "web"),
        ("status", "active", "link"),
        ("preferences", "active", "link"),
        ("status", "unsubscribed", "link"),
    ]
