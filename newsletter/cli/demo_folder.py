"""The folder `newsletter demo` builds in: only a folder it made itself is ever emptied.

A real instance's `newsletter.toml` holds the `secret_key` every mailed link is signed with, and
its database the subscribers, history and the suppression list of erased people: deleting them
by accident cannot be undone. So the demo marks its folder, and rebuilds a marked one only when
asked (`--force`); an unmarked folder that holds anything is refused, nothing touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from newsletter.cli.output import output_folder, write_output
from newsletter.errors import ConfigError

MARK = ".newsletter-demo"
_MARK_TEXT = (
    "This folder was built by `newsletter demo`; `newsletter demo --force` deletes and rebuilds "
    "newsletter.toml, newsletter.db* and outbox/ here.\n"
)


def _made_by_demo(name: str) -> bool:
    return name in (MARK, "newsletter.toml", "outbox") or name.startswith("newsletter.db")


def _listed(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def clear(folder: Path, *, force: bool) -> None:
    """Make `folder` ready for a new demo, or refuse (ConfigError) with nothing deleted."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ConfigError(f"demo --dir {folder}: it is a file; give a folder")
    present = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not present:
        return
    if not (folder / MARK).is_file():
        raise ConfigError(
            f"demo --dir {folder}: the folder holds {_listed(present)} and was not made by "
            f"`newsletter demo` (no {MARK} in it); nothing was changed; give a new or empty "
            "folder"
        )
    foreign = [name for name in present if not _made_by_demo(name.rstrip("/"))]
    if foreign:
        raise ConfigError(
            f"demo --dir {folder}: the folder holds {_listed(foreign)}, which `newsletter demo` "
            "did not create; nothing was changed; move them away or give another folder"
        )
    if not force:
        raise ConfigError(
            f"demo --dir {folder} holds a demo built before (its newsletter.toml, database and "
            "outbox); nothing was changed; give --force to delete and rebuild it, or another "
            "folder"
        )
    for name in present:
        entry = folder / name.rstrip("/")
        if name == MARK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def mark(folder: Path) -> None:
    write_output(output_folder(folder) / MARK, _MARK_TEXT)
