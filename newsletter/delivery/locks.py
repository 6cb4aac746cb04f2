"""One sender per SQLite database: an advisory lock file beside the database."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from sqlalchemy import Engine

from newsletter.errors import DeliveryError


class SenderBusyError(DeliveryError):
    def __init__(self, lock: Path) -> None:
        self.lock = lock
        super().__init__(
            f"another sender is already running on this SQLite database (lock {lock}); "
            "SQLite allows one worker: wait for it, or use PostgreSQL for several workers"
        )


class SenderLock:
    """Held while sending; a no-op on PostgreSQL, where row locks let workers share a campaign."""

    def __init__(self, engine: Engine) -> None:
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self.path = Path(f"{database}.sender.lock") if database and database != ":memory:" else None
        self.fd: int | None = None

    def __enter__(self) -> SenderLock:
        if self.path is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SenderBusyError(self.path) from None
        self.fd = fd
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
