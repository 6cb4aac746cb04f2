"""The composition root shared by the CLI, the web app and the scheduler: settings in, objects out."""

from __future__ import annotations

from pathlib import Path

from newsletter import directory
from newsletter.config import Settings
from newsletter.db import (
    DatabaseUnavailableError,
    Engine,
    Session,
    describe,
    is_initialised,
    make_engine,
    upgrade,
)
from newsletter.delivery.compose import IssueContext
from newsletter.delivery.smtp import SmtpTransport
from newsletter.delivery.transports import FileTransport, NullTransport, Transport
from newsletter.errors import ConfigError
from newsletter.issues import get_issue
from newsletter.mail.message import DkimKey
from newsletter.mail.sending_setup import KeyFacts, blockers, judge_base_url, judge_dkim, key_facts
from newsletter.mail.settings import MailSettings
from newsletter.render.environment import make_environment


def open_database(settings: Settings) -> Engine:
    """The engine of an initialised database; never creates one (that is `newsletter init`)."""
    url = settings.resolved_database_url
    database = describe(url)
    missing = _missing_sqlite_file(url)
    if missing is not None:
        # Connecting would leave an empty file behind, which the next command takes for a
        # database that lost its tables.
        raise ConfigError(f"{database} does not exist; run `newsletter init` to create it")
    engine = make_engine(url)
    initialised = _probe(engine, database, then="run `newsletter init`")
    if not initialised:
        engine.dispose()
        raise ConfigError(f"{database} has no schema yet; run `newsletter init`")
    return engine


def create_database(settings: Settings) -> Engine:
    """The engine of the database brought to the latest schema (`newsletter init`)."""
    engine = make_engine(settings.resolved_database_url)
    _probe(engine, describe(settings.resolved_database_url), then="run `newsletter init` again")
    upgrade(engine)
    return engine


def _probe(engine: Engine, database: str, *, then: str) -> bool:
    """Whether the schema exists; a PostgreSQL database not created yet is named as such, not
    as a server to check (the server answered: it has no database of that name)."""
    try:
        return is_initialised(engine)
    except DatabaseUnavailableError as exc:
        engine.dispose()
        if "does not exist" in exc.problem:
            raise ConfigError(
                f"{database} does not exist ({exc.problem}); create it (`createdb`), then {then}"
            ) from None
        raise


def _missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL that names one not on disk (the URL is already resolved)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or ":memory:" in url:
        return None
    file = Path(url[len(prefix) :].split("?", 1)[0])
    return None if file.exists() else file


def data_dir(settings: Settings) -> Path:
    return settings.path(settings.data_dir) if settings.data_dir else directory.bundled_data_dir()


def templates_dir(settings: Settings) -> Path | None:
    return settings.path(settings.templates_dir) if settings.templates_dir else None


def load_dkim(settings: Settings) -> DkimKey | None:
    dkim = settings.dkim
    if not dkim.enabled:
        return None
    key_file = settings.path(dkim.key_file)
    try:
        key = key_file.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"Config 'dkim.key_file': cannot read {key_file}: {exc.strerror}"
        ) from None
    return DkimKey(domain=dkim.domain, selector=dkim.selector, private_key=key)


def read_dkim_key(settings: Settings) -> tuple[KeyFacts | None, str]:
    """The DKIM key's facts, or why they could not be read ("" when no key is configured)."""
    if not settings.dkim.key_file:
        return None, ""
    path = settings.path(settings.dkim.key_file)
    try:
        pem = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read dkim.key_file {path}: {exc.strerror}"
    return key_facts(pem, str(path))


def require_sendable(settings: Settings) -> None:
    """Refuse to send real mail with a setup that would hurt readers or the domain's name:
    an http base_url (unless this machine's own, for a trial), a partly set [dkim], a key
    that cannot sign or a DKIM domain that does not align with From."""
    key, problem = read_dkim_key(settings)
    judged = [*judge_base_url(settings), *judge_dkim(settings, key, problem)]
    found = blockers(judged)
    if found:
        fixes = "; ".join(f.message for f in found)
        raise ConfigError(f"not sending by smtp: {fixes} (see `newsletter check`)")


def make_transport(
    settings: Settings, kind: str | None = None, outbox: Path | None = None
) -> Transport:
    chosen = kind or settings.transport
    if chosen == "file":
        return FileTransport(outbox or settings.path(settings.outbox))
    if chosen == "smtp":
        require_sendable(settings)
        return SmtpTransport(settings.smtp, local_hostname=settings.domain)
    if chosen == "null":
        return NullTransport()
    raise ConfigError(f"unknown transport {chosen!r}; use file, smtp or null")


def issue_context(session: Session, settings: Settings, slug: str) -> IssueContext:
    stored = get_issue(session, slug)
    return IssueContext(
        issue=stored.issue,
        sectors=directory.sectors(session),
        embassies=directory.embassies(session),
        mail=MailSettings.of(settings),
        env=make_environment(templates_dir(settings)),
        dkim=load_dkim(settings),
    )
