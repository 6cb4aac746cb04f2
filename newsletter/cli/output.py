"""The one way the command line writes a file the staff member named (`-o`, `--csv`, a folder).

A bad path is the staff member's to fix, so it is one `error: ...` line naming the path and the
move, never a traceback; `-` is stdout. A file is written beside its target and moved over it, so
a failed write (disk full, killed) never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import typer

from newsletter.errors import ConfigError

STDOUT = Path("-")


def _why(path: Path, exc: OSError, *, folder: bool = False) -> str:
    what = f"cannot create folder {path}" if folder else f"cannot write {path}"
    if not folder and (isinstance(exc, IsADirectoryError) or path.is_dir()):
        return f"{what}: it is a folder; give a file name, such as {path / 'out'}"
    if isinstance(exc, FileExistsError | NotADirectoryError | FileNotFoundError):
        start = path if folder else path.parent
        blocking = next((p for p in (start, *start.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            return f"{what}: {blocking} is a file"
        if not folder and not path.parent.is_dir():
            return f"{what}: folder {path.parent} does not exist; create it first"
    if isinstance(exc, PermissionError):
        return f"{what}: permission denied"
    return f"{what}: {exc.strerror or exc}"


def check_output(path: Path | None) -> None:
    """Refuse a path `write_output` cannot write before the work that fills it (and its
    warnings) is done."""
    if path is None or path == STDOUT:
        return
    if path.is_dir():
        raise ConfigError(_why(path, IsADirectoryError()))
    if not path.parent.is_dir():
        raise ConfigError(_why(path, FileNotFoundError()))


def write_output(path: Path | None, data: str | bytes, *, encoding: str = "utf-8") -> str:
    """Write `data` to `path` (None or `-`: stdout); where it went, for the message that follows."""
    raw = data.encode(encoding) if isinstance(data, str) else data
    if path is None or path == STDOUT:
        typer.echo(raw, nl=False)
        return "stdout"
    check_output(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(raw)
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise ConfigError(_why(path, exc)) from None
    return str(path)


def output_folder(path: Path) -> Path:
    """`path` as a folder to write into, created (with its parents) if missing."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(_why(path, exc, folder=True)) from None
    return path
