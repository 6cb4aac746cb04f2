"""Settings: a TOML file (`newsletter.toml`) overridden by `NEWSLETTER_*` environment variables."""

from __future__ import annotations

import difflib
import json
import os
import re
import secrets
import textwrap
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from newsletter.errors import ConfigError

DEFAULT_CONFIG = Path("newsletter.toml")
CONFIG_ENV = "NEWSLETTER_CONFIG"


class _Section(BaseModel):
    """A `[table]` of the file: unknown keys are errors, and nothing changes it once loaded."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SenderSettings(_Section):
    """The From and Reply-To of every message."""

    address: str = Field(default="newsletter@newsletter.example.org", description="From address.")
    name: str = Field(default="中国科技创新速递", description="From display name.")
    reply_to: str = Field(default="", description="Reply-To address (empty: none).")


class SmtpSettings(_Section):
    """The relay the smtp transport sends through."""

    host: str = Field(default="127.0.0.1", description="Relay host name or address.")
    port: int = Field(default=25, ge=0, le=65535, description="Relay port.")
    security: Literal["none", "starttls", "ssl"] = Field(
        default="none", description='"none", "starttls" or "ssl".'
    )
    username: str = Field(default="", description="Login (empty: no AUTH).")
    password: str = Field(default="", description="Password for the login.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for each reply.")
    concurrency: int = Field(default=4, ge=1, le=64, description="Simultaneous SMTP connections.")
    validate_certs: bool = Field(
        default=True, description="Check the relay's TLS certificate and host name."
    )


class DkimSettings(_Section):
    """Messages are DKIM-signed when all three are set."""

    domain: str = Field(default="", description="Signing domain (d=).")
    selector: str = Field(default="", description="Selector (s=) of the DNS key record.")
    key_file: str = Field(default="", description="PEM private key (relative to this file).")

    @property
    def enabled(self) -> bool:
        return bool(self.domain and self.selector and self.key_file)


class WebSettings(_Section):
    """The subscriber pages (`serve`, `run --web`)."""

    subscribe_per_ip: int = Field(
        default=20,
        ge=1,
        description="Subscribe-form posts per client address within window_seconds; checked "
        "before anything is written or mailed, counted in the database so every web process "
        "shares the limit.",
    )
    subscribe_per_address: int = Field(
        default=3,
        ge=1,
        description="Confirmation mails per subscriber address within window_seconds.",
    )
    window_seconds: float = Field(default=3600.0, gt=0, description="The limits' window.")
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        examples=[("127.0.0.1",)],
        description="Reverse proxies (addresses or networks such as 10.0.0.0/8) whose "
        "X-Forwarded-For names the client; from any other peer the header is ignored. None by "
        "default, so a client cannot pick its own address for the per-IP limit.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network such as 10.0.0.0/8"
                ) from None
        return tuple(entry.strip() for entry in value)

    allowed_domains: tuple[str, ...] = Field(
        default=(),
        examples=[("mfa.gov.cn",)],
        description="Mail domains the sign-up form accepts (a subdomain counts as its domain); "
        "empty: any. An address outside them gets the same answer as any other, and no mail.",
    )
    approval: Literal["none", "mission"] = Field(
        default="none",
        description='"mission": a confirmed web sign-up waits for a list manager or the '
        "mission's liaison (`newsletter subscribers approve`) before any issue reaches it.",
    )

    @field_validator("allowed_domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        domains = tuple(entry.strip().lower().lstrip("@").rstrip(".") for entry in value)
        for entry, domain in zip(value, domains, strict=True):
            if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", domain):
                raise ValueError(f"{entry!r} is not a mail domain such as mfa.gov.cn")
        return domains


class ArchiveSettings(_Section):
    """Who may read the web version of sent issues (`/archive`)."""

    visibility: Literal["public", "subscribers", "staff"] = Field(
        default="subscribers",
        description='"public": anyone, cached, with an Atom feed; "subscribers": the links in '
        "each digest carry the reader's own signed read token, other visitors are told how to "
        'subscribe; "staff": the public site refuses every issue page.',
    )


class DeliverySettings(_Section):
    """How the sender paces, retries and leases its work."""

    rate: float = Field(
        default=0.0,
        ge=0,
        description="Messages per second over all connections (0: unlimited).",
    )
    per_domain_rate: float = Field(
        default=0.0,
        ge=0,
        description="Messages per second to one recipient domain (0: unlimited): many missions "
        "share one ministry mail domain, which must not see a burst.",
    )
    batch_size: int = Field(
        default=200,
        ge=1,
        le=5000,
        description="Ledger rows claimed per round trip to the database.",
    )
    max_attempts: int = Field(
        default=0,
        ge=0,
        description="4xx replies and connection faults are retried with exponential backoff "
        "and jitter for retry_max_age_hours after the first attempt (RFC 5321: days, not "
        "minutes); max_attempts caps the attempts as well (0: no cap).",
    )
    retry_base_seconds: float = Field(
        default=60.0, gt=0, description="First retry delay; it doubles with each attempt."
    )
    retry_cap_seconds: float = Field(
        default=7200.0, gt=0, description="Longest delay between two attempts."
    )
    retry_max_age_hours: float = Field(
        default=48.0, gt=0, description="How long after the first attempt a row is retried."
    )
    lease_seconds: float = Field(
        default=600.0,
        gt=0,
        description="A claimed row not recorded within this time belongs to a worker presumed "
        "dead (a live sender renews its leases a third of this apart, however slow the relay).",
    )
    refusal_burst: int = Field(
        default=10,
        ge=2,
        description="Permanent refusals in a row (no recipient accepted in between), at 3 or "
        "more domains, that blame the relay, not the recipients: the campaign pauses and "
        "nobody is bounced.",
    )
    deferral_burst: int = Field(
        default=10,
        ge=2,
        description="Temporary refusals in a row that make the campaign back off; nobody is "
        "failed by them.",
    )
    poll_seconds: float = Field(
        default=5.0, gt=0, description="How often an idle worker looks for work."
    )
    catch_up_days: int = Field(
        default=30,
        ge=0,
        le=3660,
        description="Someone who joins after an issue went out (a newcomer, a successor after "
        "a handover) gets it from the next digest if it is the latest and this recent (0: "
        "never); older back issues never.",
    )


class ScheduleSettings(_Section):
    """Scheduled sends and `newsletter run`."""

    local_time: str = Field(
        default="09:00",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="Local time (HH:MM, each mission's own clock) of a `newsletter schedule` "
        "given no time.",
    )
    misfire_grace_hours: float = Field(
        default=6.0,
        gt=0,
        description="A scheduled send whose time passed while `newsletter run` was down still "
        "goes out if it is at most this late; later than that it is reported as missed and "
        "not sent.",
    )
    poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often `newsletter run` looks for jobs added by other commands.",
    )
    lock_retry_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often a standby `newsletter run` retries the scheduler lock held by "
        "another one.",
    )


class AdminSettings(_Section):
    """The staff console (`admin serve`, `run --admin`), on its own listener."""

    allow_networks: tuple[str, ...] = Field(
        default=("127.0.0.1/32", "::1/128"),
        description="Client addresses or networks (such as 10.20.0.0/16) that may open the "
        "console; every other client gets 403 before any page. Loopback only by default.",
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        examples=[("127.0.0.1",)],
        description="Reverse proxies whose X-Forwarded-For names the client (and whose "
        "X-Forwarded-Proto says https); from any other peer both headers are ignored.",
    )
    session_idle_minutes: float = Field(
        default=30.0, gt=0, description="A console session unused this long ends."
    )
    session_absolute_hours: float = Field(
        default=12.0, gt=0, description="A console session ends this long after its login."
    )
    require_second_approver: bool = Field(
        default=True,
        description="A campaign is sent only once someone other than its requester and the "
        "issue's last editor approved it (four-eyes sign-off).",
    )

    @field_validator("allow_networks", "trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return WebSettings._networks(value)


class InboxSettings(_Section):
    """The mailbox mail comes back to: bounces, complaints, mailto unsubscribes (`inbox fetch`)."""

    bounce_domain: str = Field(
        default="",
        description="Return-path domain: each digest's envelope sender becomes "
        "bounce+<signed delivery token>@this domain, so a bounce names its ledger row (empty: "
        "the From address). Its MX must deliver to the mailbox below.",
    )
    host: str = Field(default="", description="IMAP server (empty: `inbox fetch` is off).")
    port: int = Field(default=993, ge=0, le=65535, description="IMAP port.")
    security: Literal["ssl", "starttls", "none"] = Field(
        default="ssl", description='"ssl" (port 993), "starttls" (143) or "none" (loopback only).'
    )
    username: str = Field(default="", description="IMAP login.")
    password: str = Field(default="", description="Password for the login.")
    folder: str = Field(default="INBOX", description="The folder read.")
    done_folder: str = Field(
        default="",
        description="Folder the mail acted on is moved to (empty: it stays, flagged as read); "
        "mail left for a person always stays, unread.",
    )
    fetch_minutes: float = Field(
        default=10.0, ge=0, description="How often `newsletter run` fetches (0: never)."
    )
    timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for each reply.")
    validate_certs: bool = Field(
        default=True, description="Check the server's TLS certificate and host name."
    )

    @field_validator("bounce_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        domain = value.strip().lower().rstrip(".")
        if domain and (not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", domain)):
            raise ValueError(f"{value!r} is not a domain name, such as bounces.example.org")
        return domain


SECTIONS: dict[str, type[_Section]] = {
    "sender": SenderSettings,
    "smtp": SmtpSettings,
    "dkim": DkimSettings,
    "web": WebSettings,
    "archive": ArchiveSettings,
    "delivery": DeliverySettings,
    "schedule": ScheduleSettings,
    "admin": AdminSettings,
    "inbox": InboxSettings,
}


class Settings(BaseSettings):
    """Every option; loaded once, then read-only (a command's overrides make a copy)."""

    model_config = SettingsConfigDict(
        env_prefix="NEWSLETTER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database_url: str = Field(
        default="sqlite:///newsletter.db",
        description="SQLite file (relative to this file) or postgresql+psycopg://user@host/dbname",
    )
    secret_key: str = Field(
        default="",
        description="Signs unsubscribe, preferences and confirmation links, and keys the "
        "hashes of erased addresses. Keep it secret; changing it invalidates every link "
        "already sent and makes the suppression list forget who asked to be erased.",
    )
    base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Public address of the web pages (unsubscribe, preferences, archive).",
    )
    domain: str = Field(
        default="newsletter.example.org",
        description="Domain used in Message-ID, EHLO and List-Id; never the host's own name.",
    )
    list_id: str = Field(default="kjcxsd", description="List-Id label: <list_id.domain>")
    transport: Literal["file", "smtp", "null"] = Field(
        default="file",
        description='How mail leaves: "file" (an outbox folder of .eml files), "smtp" or "null".',
    )
    outbox: str = Field(
        default="outbox",
        description="Outbox folder for the file transport (relative to this file).",
    )
    data_dir: str = Field(
        default="",
        description="Folder with sectors.yaml, embassies.csv and lists/ (empty: the bundled "
        "sample data).",
    )
    templates_dir: str = Field(
        default="", description="Folder of templates overriding the bundled ones (empty: bundled)."
    )
    sender: SenderSettings = SenderSettings()
    smtp: SmtpSettings = SmtpSettings()
    dkim: DkimSettings = DkimSettings()
    web: WebSettings = WebSettings()
    archive: ArchiveSettings = ArchiveSettings()
    delivery: DeliverySettings = DeliverySettings()
    schedule: ScheduleSettings = ScheduleSettings()
    admin: AdminSettings = AdminSettings()
    inbox: InboxSettings = InboxSettings()
    # Where relative paths in the file are resolved: the folder holding the config file (set
    # by `load_settings`, so not written into the sample).
    base_dir: str = "."

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, which arrives as init arguments.
        return (env_settings, init_settings)

    def overridden(self, changes: Mapping[str, object]) -> Settings:
        """A validated copy with `changes` applied: {"transport": "smtp", "smtp.port": 2525}.

        Values that are None are left as they are (an option the command line did not get).
        The environment is not read again.
        """
        data = self.model_dump()
        for dotted, value in changes.items():
            if value is None:
                continue
            section, _, key = dotted.rpartition(".")
            target = data[section] if section else data
            if key not in target:
                raise KeyError(f"no setting {dotted!r}")
            target[key] = value
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_first_error(exc, "")) from None

    def path(self, value: str) -> Path:
        """A path option resolved against the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def resolved_database_url(self) -> str:
        prefix = "sqlite:///"
        url = self.database_url
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.path(url[len(prefix) :]).resolve())
        return url

    @property
    def secret(self) -> bytes:
        return secret_bytes(self.secret_key)


def secret_bytes(secret_key: str) -> bytes:
    if len(secret_key) < 32:
        raise ConfigError(
            "Config 'secret_key' is missing or shorter than 32 characters; "
            "run `newsletter init` or set NEWSLETTER_SECRET_KEY"
        )
    return secret_key.encode()


# --- Unknown keys -------------------------------------------------------------------------------

# Top-level fields not written in the sample: load_settings sets base_dir itself.
_NOT_IN_SAMPLE = frozenset({"base_dir"})
_ENV_PREFIX = "NEWSLETTER_"


def _known(section: str) -> list[str]:
    if section:
        return list(SECTIONS[section].model_fields)
    return list(Settings.model_fields)


def _nearest(word: str, candidates: Sequence[str]) -> str | None:
    found = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_file_key(values: Mapping[str, Any]) -> str | None:
    """The error for the first key no setting has: unknown key 'smtp.hots'; did you mean ..."""
    for key, value in values.items():
        if key not in Settings.model_fields:
            return _unknown(key, _nearest(key, _known("")))
        if key in SECTIONS and isinstance(value, Mapping):
            known = _known(key)
            for sub in value:
                if sub not in known:
                    near = _nearest(sub, known)
                    return _unknown(f"{key}.{sub}", f"{key}.{near}" if near else None)
    return None


def _unknown(key: str, near: str | None) -> str:
    hint = f"; did you mean '{near}'?" if near else ""
    return f"unknown key '{key}'{hint}"


def unknown_env_key(environ: Mapping[str, str]) -> str | None:
    """The first NEWSLETTER_* variable that looks meant for a setting but names none.

    A variable that resembles no setting at all (NEWSLETTER_CONFIG, a test suite's own) is
    left alone: it is not ours to refuse.
    """
    sections, top = list(SECTIONS), _known("")
    for name in sorted(environ):
        if not name.upper().startswith(_ENV_PREFIX):
            continue
        rest = name[len(_ENV_PREFIX) :].lower()
        head, _, sub = rest.partition("__")
        if head in top and (not sub or head in SECTIONS and sub in _known(head)):
            continue
        if head in SECTIONS:
            near = _nearest(sub, _known(head))
            hint = _env_name(f"{head}__{near}") if near else None
        elif sub:
            near_section = _nearest(head, sections)
            if near_section is None:
                continue
            near = _nearest(sub, _known(near_section))
            hint = _env_name(f"{near_section}__{near or sub}")
        else:
            near = _nearest(head, top)
            if near is None:
                continue
            hint = _env_name(near)
        suffix = f"; did you mean {hint}?" if hint else ""
        return f"environment variable {name} names no setting{suffix}"
    return None


def _env_name(key: str) -> str:
    return _ENV_PREFIX + key.upper()


def _first_error(exc: ValidationError, where: str) -> str:
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        section, _, sub = key.rpartition(".")
        near = _nearest(sub, _known(section) if section in SECTIONS else _known(""))
        return f"{where}{_unknown(key, f'{section}.{near}' if section and near else near)}"
    return f"{where}config '{key}': {first['msg']}"


def config_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG


def load_settings(path: Path | None = None, *, required: bool = False) -> Settings:
    """Read the config file (if present, or required) and the environment."""
    file = config_path(path)
    values: dict[str, Any] = {}
    if file.exists():
        try:
            values = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    elif required or path is not None:
        raise ConfigError(f"config file {file} not found; create one with `newsletter init`")
    unknown = unknown_file_key(values)
    if unknown:
        raise ConfigError(f"{file}: {unknown}")
    unknown = unknown_env_key(os.environ)
    if unknown:
        raise ConfigError(unknown)
    values.setdefault("base_dir", str(file.resolve().parent))
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc, f"{file}: ")) from None


# --- The sample file ----------------------------------------------------------------------------

_HEADER = """\
# newsletter configuration. Every key can be overridden by the environment:
# NEWSLETTER_<KEY>, and NEWSLETTER_<TABLE>__<KEY> for keys inside a [table].
"""


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string: the same escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _comment(text: str | None) -> list[str]:
    if not text:
        return []
    return textwrap.wrap(text, width=96, initial_indent="# ", subsequent_indent="# ")


def _entries(model: type[BaseModel], values: Mapping[str, object]) -> list[str]:
    lines: list[str] = []
    for name, info in model.model_fields.items():
        if name in SECTIONS or name in _NOT_IN_SAMPLE:
            continue
        lines += _comment(info.description)
        value = values.get(name, info.get_default(call_default_factory=True))
        if isinstance(value, tuple | list) and not value and info.examples:
            # An empty list reads better as an example to uncomment.
            lines.append(f"# {name} = {_toml(info.examples[0])}")
        else:
            lines.append(f"{name} = {_toml(value)}")
    return lines


def sample_config(*, database_url: str | None = None) -> str:
    """The commented config `newsletter init` writes, with a fresh secret.

    Written from the fields themselves (default and description), so it cannot drift from them.
    """
    top: dict[str, object] = {"secret_key": secrets.token_urlsafe(48)}
    if database_url is not None:
        top["database_url"] = database_url
    lines = [_HEADER.rstrip("\n"), "", *_entries(Settings, top)]
    for name, section in SECTIONS.items():
        lines += ["", *_comment(section.__doc__), f"[{name}]", *_entries(section, {})]
    return "\n".join(lines) + "\n"
