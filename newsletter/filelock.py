"""Advisory lock files beside a SQLite database: one sender, one scheduler.

`flock`, so the kernel frees a lock when its process dies, even by SIGKILL: a crash never leaves
a stale lock behind for staff to delete.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy import Engine


def lock_path(engine: Engine, purpose: str) -> Path | None:
    """`<database>.<purpose>.lock` for a SQLite file; None for PostgreSQL or an in-memory database."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    return Path(f"{database}.{purpose}.lock") if database and database != ":memory:" else None


def try_lock(path: Path) -> int | None:
    """The open, locked file descriptor; None when another process holds the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
