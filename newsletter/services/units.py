"""The database a service works on, and its one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from newsletter import runtime
from newsletter.config import Settings
from newsletter.db import Engine, Session


@contextmanager
def database(settings: Settings, db: Engine | None) -> Iterator[Engine]:
    """The caller's engine as is, or one opened for this call and disposed after it."""
    if db is not None:
        yield db
        return
    engine = runtime.open_database(settings)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def unit_of_work(
    settings: Settings, db: Engine | None, *, commit: bool = True
) -> Iterator[Session]:
    """One session, committed once when the block ends (`commit=False`: rolled back, a dry run).

    Any error rolls everything back: a service's steps stand or fall together.
    """
    with database(settings, db) as engine, Session(engine, expire_on_commit=False) as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        if commit:
            session.commit()
        else:
            session.rollback()
