"""One sender per SQLite database: an advisory lock file beside the database."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from sqlalchemy import Engine

from newsletter.errors import DeliveryError
from newsletter.filelock import lock_path, try_lock, unlock


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
        self.path = lock_path(engine, "sender")
        self.fd: int | None = None

    def __enter__(self) -> SenderLock:
        if self.path is None:
            return self
        self.fd = try_lock(self.path)
        if self.fd is None:
            raise SenderBusyError(self.path)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.fd is not None:
            unlock(self.fd)
            self.fd = None
