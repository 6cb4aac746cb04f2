"""Test support for pages seen in Debian's chromium through Playwright."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
WIDTH = 320  # the narrowest phone a diplomat reads on


def need_chromium() -> None:
    if CHROMIUM.is_file():
        return
    if IN_CI:
        pytest.fail(f"CI=true but {CHROMIUM} is missing; .ci/run installs Debian's chromium")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")


def fits(page: Any, width: int = WIDTH) -> None:
    """Nothing sticks out sideways: no horizontal scrolling at `width`."""
    scrolled = page.evaluate("() => document.documentElement.scrollWidth")
    assert scrolled <= width, f"{page.url} is {scrolled}px wide"
