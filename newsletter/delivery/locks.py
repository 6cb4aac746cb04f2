"""One sender per SQLite database: an advisory lock file beside the database."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import TracebackType

from sqlalchemy import Engine

from newsletter.errors import DeliveryError
from newsletter.filelock import lock_path, try_lock, unlock


def _holder(lock: Path) -> str:
    """Who holds the lock, as its holder wrote it: `pid 123: newsletter run`."""
    try:
        text = lock.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "a process that did not say which"


class SenderBusyError(DeliveryError):
    def __init__(self, lock: Path, instead: str = "") -> None:
        self.lock = lock
        self.holder = _holder(lock)
        # `newsletter run` and `worker` take up every sending campaign: `send` hands them its
        # campaign; what they cannot take is a second sender beside them.
        instead = instead or (
            "it sends every queued campaign: `newsletter send SLUG` hands it one and "
            "`newsletter campaign status ID` follows it; stop it to run another sender here, "
            "or use PostgreSQL for several workers"
        )
        super().__init__(
            f"another sender ({self.holder}) is running on this SQLite database "
            f"(lock {lock}); {instead}"
        )


def _command() -> str:
    words = [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]]
    return " ".join(w for w in words if "\n" not in w)[:200]


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
        # Named in the refusal a second sender gets (the kernel frees the lock, not the text).
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()}: {_command()}".encode(), 0)
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
