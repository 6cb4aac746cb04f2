"""Engine and sessions for SQLite or PostgreSQL, and Alembic migrations to the latest schema."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Session

from newsletter.errors import ConfigError, NewsletterError

# The engine and session types every layer above storage names, so that only storage imports
# SQLAlchemy and SQLModel (the import contracts hold the rest of the package to that).
__all__ = ["Engine", "Session"]

MIGRATIONS = Path(__file__).parent / "migrations"


# How long a SQLite statement waits for another connection's write lock before "database is
# locked"; `?timeout=SECONDS` in the URL overrides it.
SQLITE_BUSY_SECONDS = 10.0
# PostgreSQL: give up on a server that does not answer the connection within this many seconds,
# and notice a dead peer (a dropped network, a server gone without a FIN) in about a minute
# instead of the kernel's quarter of an hour. Settings in the URL's query win.
PG_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def _sqlite_pragmas(busy_ms: int) -> Callable[[Any, Any], None]:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets the web pages read while a send writes; FULL survives power loss mid-send.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms:d}")
        cursor.close()

    return apply


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"Config 'database_url' {url!r} is not a database URL") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        busy = _seconds(parsed, "timeout", SQLITE_BUSY_SECONDS)
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": busy})
        event.listen(engine, "connect", _sqlite_pragmas(round(busy * 1000)))
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        options = {k: v for k, v in PG_CONNECT_ARGS.items() if k not in parsed.query}
        # pre_ping: a pooled connection whose backend was terminated is replaced at checkout,
        # not discovered by the first statement of a send.
        return create_engine(parsed, pool_pre_ping=True, connect_args=options)
    raise ConfigError(
        f"Config 'database_url': {parsed.get_backend_name()!r} is not supported; use sqlite or postgresql"
    )


def _seconds(url: URL, key: str, default: float) -> float:
    value = url.query.get(key)
    if value is None:
        return default
    try:
        return float(value if isinstance(value, str) else value[-1])
    except ValueError:
        raise ConfigError(
            f"Config 'database_url': {key}={value!r} is not a number of seconds"
        ) from None


def describe(url: str | URL) -> str:
    """The database as a staff member would name it, never with its password."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "the database"
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite database {parsed.database or ':memory:'}"
    where = f"{parsed.host or 'localhost'}{f':{parsed.port}' if parsed.port else ''}"
    user = f"{parsed.username}@" if parsed.username else ""
    return f"PostgreSQL database {parsed.database or ''} at {user}{where}"


class DatabaseUnavailableError(NewsletterError, RuntimeError):
    """The database cannot be reached or written now (connection lost, locked, disk full)."""

    def __init__(self, database: str, problem: str) -> None:
        self.database = database
        self.problem = problem
        super().__init__(
            f"{database} is unavailable: {problem}; check that it is running and reachable, "
            "then try again"
        )


# SQLite reports SQL mistakes ("no such table") as OperationalError too: only these pass.
_SQLITE_TRANSIENT = (
    "database is locked",
    "database table is locked",
    "database schema is locked",
    "disk i/o error",
    "database or disk is full",
    "unable to open database file",
)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _problem(error: BaseException) -> str | None:
    if isinstance(error, sa_exc.DBAPIError):
        detail = _first_line(str(error.orig)) or type(error.orig).__name__
        if error.connection_invalidated:
            return detail
        if isinstance(error.orig, sqlite3.Error):
            return _problem(error.orig)
        if isinstance(error, sa_exc.OperationalError):
            return detail
        return None
    if isinstance(error, sqlite3.OperationalError):
        text = _first_line(str(error))
        return text if text.lower().startswith(_SQLITE_TRANSIENT) else None
    # psycopg is imported only by a PostgreSQL engine: a command on SQLite never pays for it.
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(error, psycopg.OperationalError):
        return _first_line(str(error)) or type(error).__name__
    if isinstance(error, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        # A pool with every connection checked out and none back in time: blocked connections.
        return _first_line(str(error))
    if isinstance(error, sa_exc.PendingRollbackError):
        # What a session says when reused after its connection died mid-transaction.
        return _first_line(str(error))
    return None


def database_problem(error: BaseException) -> str | None:
    """One line naming a database fault worth waiting out (connection lost or refused, database
    locked, disk full or failing); None for anything else, which is a bug or bad data."""
    seen: BaseException | None = error
    for _ in range(4):  # the fault itself, or what a wrapper says it was raised from
        if seen is None:
            return None
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:
            seen = seen.exceptions[0]
            continue
        problem = _problem(seen)
        if problem is not None:
            return problem[:300]
        seen = seen.__cause__
    return None


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the database to the latest schema."""
    cfg = _alembic_config()
    try:
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    except OperationalError as exc:
        problem = database_problem(exc) or _first_line(str(exc.orig))
        raise ConfigError(f"cannot open the {describe(engine.url)}: {problem}") from None


def is_initialised(engine: Engine) -> bool:
    """Whether the schema exists; a database that cannot be reached says so, not "run init"."""
    try:
        return inspect(engine).has_table("alembic_version")
    except OperationalError as exc:
        problem = database_problem(exc)
        if problem is None:
            return False
        raise DatabaseUnavailableError(describe(engine.url), problem) from None
