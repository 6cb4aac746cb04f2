"""The `newsletter` command line: parse, call the core, print. Exit 0 ok, 1 user error, 2 usage.

Each command's module is imported when that command runs (`cli/index.py`); `load_all` imports
every one, for what needs the whole tree at once (a test walking every command's help).
"""

from __future__ import annotations

import importlib
import pkgutil

from newsletter.cli.base import app

__all__ = ["app", "load_all", "main"]


def load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def main() -> None:
    app()
