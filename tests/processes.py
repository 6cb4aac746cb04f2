"""Test support for real processes: free loopback ports, polling a condition, a `newsletter run`."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import Instance

NEWSLETTER = Path(sys.executable).parent / "newsletter"
TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def wait_until_responds(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it exits or never does."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    pytest.fail(f"the server did not answer {url} within {TIMEOUT:.0f} s:\n{log.read_text()}")


class Daemon:
    """One `newsletter run` subprocess; its stderr goes to a file the test reads."""

    def __init__(self, instance: Instance, env: dict[str, str], name: str, *args: str) -> None:
        self.log = instance.dir / f"{name}.stderr"
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [str(NEWSLETTER), "--config", str(instance.config), "run", *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
            )  # fmt: skip

    @property
    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def says(self, text: str, timeout: float = TIMEOUT) -> None:
        wait_for(lambda: text in self.output, f"{text!r} in\n{self.output}", timeout)

    def leads(self) -> None:
        self.says("this process fires jobs")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(TIMEOUT)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(TIMEOUT)


def local_base_url(instance: Instance) -> str:
    """Point the instance's `base_url` at a free loopback port (before `init`, so mailed links
    name it) and return it."""
    base_url = f"http://127.0.0.1:{free_port()}"
    config = instance.config.read_text(encoding="utf-8")
    config = re.sub(r'(?m)^base_url = ".*"$', f'base_url = "{base_url}"', config)
    instance.config.write_text(config, encoding="utf-8")
    return base_url


@contextmanager
def serving(instance: Instance, base_url: str, log: Path) -> Iterator[None]:
    """`newsletter serve` on `base_url`'s port, answering, until the block ends."""
    command = [
        sys.executable, "-c", "from newsletter.cli import main; main()",
        "--config", str(instance.config), "serve", "--host", "127.0.0.1",
        "--port", base_url.rsplit(":", 1)[1],
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until_responds(f"{base_url}/subscribe", process, log)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
