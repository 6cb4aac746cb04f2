"""One scheduler per database: a PostgreSQL advisory lock, or a lock file beside a SQLite file."""

from __future__ import annotations

import zlib

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from newsletter.db import database_problem
from newsletter.filelock import lock_path, try_lock, unlock

# Advisory lock keys are per database, so one constant key means "the scheduler of this database".
ADVISORY_KEY = zlib.crc32(b"newsletter.scheduler")


class SchedulerLock:
    """Held by the one `newsletter run` that fires jobs; others retry until it is free.

    PostgreSQL: a session advisory lock on a connection kept for the process's life; it goes
    when the process or its connection dies. SQLite: flock on `<database>.scheduler.lock`,
    which the kernel releases when the process dies, even by SIGKILL.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.path = lock_path(engine, "scheduler")
        self._fd: int | None = None
        self._conn: Connection | None = None

    def describe(self) -> str:
        if self.postgres:
            return f"PostgreSQL advisory lock {ADVISORY_KEY}"
        return f"lock file {self.path}" if self.path else "in-memory database"

    @property
    def held(self) -> bool:
        return self._fd is not None or self._conn is not None

    def acquire(self) -> bool:
        """Take the lock if free; True when this process holds it (now or already)."""
        if self.held:
            return True
        if self.postgres:
            return self._acquire_advisory()
        if self.path is None:
            self._fd = -1
            return True
        self._fd = try_lock(self.path)
        return self._fd is not None

    def _acquire_advisory(self) -> bool:
        conn = self.engine.connect()
        try:
            got = bool(
                conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar()
            )
            # Session-level lock: it outlives this transaction, which must not stay open.
            conn.commit()
        except DBAPIError as exc:
            conn.close()
            if database_problem(exc) is not None:
                raise  # the database is down, not held by another `run`: the caller waits it out
            return False
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def alive(self) -> bool:
        """False when the lock was lost (the PostgreSQL connection dropped)."""
        if self._conn is None:
            return self.held
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
        except DBAPIError:
            self._forget_connection()
            return False
        return True

    def _forget_connection(self) -> None:
        if self._conn is not None:
            self._conn.invalidate()
            self._conn.close()
            self._conn = None

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                self._conn.commit()
                self._conn.close()
                self._conn = None
            except DBAPIError:
                self._forget_connection()
        if self._fd is not None:
            if self._fd >= 0:
                unlock(self._fd)
            self._fd = None
