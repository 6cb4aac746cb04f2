"""Settings: a TOML file (`newsletter.toml`) overridden by `NEWSLETTER_*` environment variables."""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from newsletter.errors import ConfigError

DEFAULT_CONFIG = Path("newsletter.toml")
CONFIG_ENV = "NEWSLETTER_CONFIG"


class SenderSettings(BaseModel):
    address: str = "newsletter@newsletter.example.org"
    name: str = "中国科技创新速递"
    reply_to: str = ""


class SmtpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 25
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    concurrency: int = Field(default=4, ge=1, le=64)
    validate_certs: bool = True


class DkimSettings(BaseModel):
    domain: str = ""
    selector: str = ""
    key_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.domain and self.selector and self.key_file)


class DeliverySettings(BaseModel):
    # Messages per second over all connections (0: no limit), and per recipient domain:
    # many missions share one ministry mail domain, which must not see a burst.
    rate: float = Field(default=0.0, ge=0)
    per_domain_rate: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=200, ge=1, le=5000)
    # Temporary failures are retried for retry_max_age_hours (RFC 5321: days, not minutes);
    # max_attempts caps the attempts too (0: no cap, the time budget alone decides).
    max_attempts: int = Field(default=0, ge=0)
    retry_base_seconds: float = Field(default=60.0, gt=0)
    retry_cap_seconds: float = Field(default=7200.0, gt=0)
    retry_max_age_hours: float = Field(default=48.0, gt=0)
    # A claimed row not recorded within this time belongs to a worker presumed dead (a live
    # sender renews its leases a third of this apart, however slow the relay).
    lease_seconds: float = Field(default=600.0, gt=0)
    # Refusals in a row (no recipient accepted in between) that mean the relay is at fault,
    # not the recipients: permanent ones at 3 or more domains pause the campaign, temporary
    # ones make it back off. Nobody is failed or bounced by them.
    refusal_burst: int = Field(default=10, ge=2)
    deferral_burst: int = Field(default=10, ge=2)
    poll_seconds: float = Field(default=5.0, gt=0)


class ScheduleSettings(BaseModel):
    # Local time of day (HH:MM, each mission's own clock) used when `schedule` gets no time.
    local_time: str = Field(default="09:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    # A scheduled send may start this late (the scheduler was down); later, it is missed.
    misfire_grace_hours: float = Field(default=6.0, gt=0)
    # How often `run` looks for jobs that other commands (`schedule`, `digest`) added.
    poll_seconds: float = Field(default=1.0, gt=0)
    # How often a standby `run` tries to take the scheduler lock another process holds.
    lock_retry_seconds: float = Field(default=5.0, gt=0)


class WebSettings(BaseModel):
    # Subscribe-form limits, counted in the database (shared by every web process) before any
    # write or mail is sent.
    subscribe_per_ip: int = Field(default=20, ge=1)
    subscribe_per_address: int = Field(default=3, ge=1)
    window_seconds: float = Field(default=3600.0, gt=0)
    # Reverse proxies (addresses or networks such as "10.0.0.0/8") whose X-Forwarded-For names
    # the client; from any other peer the header is ignored. None by default: a header anyone
    # can send must not choose whose limit a request counts against.
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network such as 10.0.0.0/8"
                ) from None
        return [entry.strip() for entry in value]


class Settings(BaseSettings):
    """Every option, with the default `newsletter init` writes into the sample file."""

    model_config = SettingsConfigDict(
        env_prefix="NEWSLETTER_", env_nested_delimiter="__", extra="forbid"
    )

    database_url: str = "sqlite:///newsletter.db"
    secret_key: str = ""
    base_url: str = "http://127.0.0.1:8000"
    domain: str = "newsletter.example.org"
    list_id: str = "kjcxsd"
    transport: Literal["file", "smtp", "null"] = "file"
    outbox: str = "outbox"
    data_dir: str = ""
    templates_dir: str = ""
    sender: SenderSettings = SenderSettings()
    smtp: SmtpSettings = SmtpSettings()
    dkim: DkimSettings = DkimSettings()
    delivery: DeliverySettings = DeliverySettings()
    web: WebSettings = WebSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    # Where relative paths in the file are resolved: the folder holding the config file.
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
        if len(self.secret_key) < 32:
            raise ConfigError(
                "Config 'secret_key' is missing or shorter than 32 characters; "
                "run `newsletter init` or set NEWSLETTER_SECRET_KEY"
            )
        return self.secret_key.encode()


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
    values.setdefault("base_dir", str(file.resolve().parent))
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{file}: config '{key}': {first['msg']}") from None


def sample_config(*, database_url: str = "sqlite:///newsletter.db") -> str:
    """The commented config `newsletter init` writes, with a fresh secret."""
    return f'''# newsletter configuration. Every key can be overridden by the environment:
# NEWSLETTER_<KEY>, and NEWSLETTER_<TABLE>__<KEY> for keys inside a [table].

# SQLite file (relative to this file) or postgresql+psycopg://user@host/dbname
database_url = "{database_url}"
# Signs unsubscribe, preferences and confirmation links, and keys the hashes of erased
# addresses. Keep it secret; changing it invalidates every link already sent and makes the
# suppression list forget who asked to be erased.
secret_key = "{secrets.token_urlsafe(48)}"
# Public address of the web pages (unsubscribe, preferences, archive).
base_url = "http://127.0.0.1:8000"
# Domain used in Message-ID, EHLO and List-Id; never the host's own name.
domain = "newsletter.example.org"
# List-Id label: <list_id.domain>
list_id = "kjcxsd"
# How mail leaves: "file" (an outbox folder of .eml files), "smtp" or "null".
transport = "file"
# Outbox folder for the file transport (relative to this file).
outbox = "outbox"
# Folder with sectors.yaml, embassies.csv and lists/ (empty: the bundled sample data).
data_dir = ""
# Folder of templates overriding the bundled ones (empty: bundled).
templates_dir = ""

[sender]
address = "newsletter@newsletter.example.org"
name = "中国科技创新速递"
reply_to = ""

[smtp]
host = "127.0.0.1"
port = 25
# "none", "starttls" or "ssl"
security = "none"
username = ""
password = ""
timeout = 30.0
# Simultaneous SMTP connections.
concurrency = 4
validate_certs = true

[dkim]
# Sign messages when all three are set; key_file is a PEM private key.
domain = ""
selector = ""
key_file = ""

[web]
# Subscribe form: posts per client address, and confirmation mails per subscriber address,
# within window_seconds; checked before anything is written or mailed, counted in the
# database so every web process shares the limits.
subscribe_per_ip = 20
subscribe_per_address = 3
window_seconds = 3600
# Reverse proxies whose X-Forwarded-For names the client (addresses or networks); none by
# default, so a client cannot pick its own address for the per-IP limit.
# trusted_proxies = ["127.0.0.1"]

[delivery]
# Messages per second over all connections (0: unlimited), and per recipient domain.
rate = 0
per_domain_rate = 0
# Ledger rows claimed per round trip to the database.
batch_size = 200
# 4xx replies and connection faults are retried with exponential backoff (capped at
# retry_cap_seconds) and jitter, for retry_max_age_hours after the first attempt; max_attempts
# caps the attempts as well (0: no cap).
max_attempts = 0
retry_base_seconds = 60
retry_cap_seconds = 7200
retry_max_age_hours = 48
# A row claimed by a worker that has not reported back within this time is presumed lost.
lease_seconds = 600
# Refusals in a row that blame the relay, not the recipients: permanent ones (at 3 or more
# domains) pause the campaign, temporary ones make it back off.
refusal_burst = 10
deferral_burst = 10
# How often an idle worker looks for work.
poll_seconds = 5

[schedule]
# Local time (HH:MM, each mission's own clock) of a `newsletter schedule` given no time.
local_time = "09:00"
# A scheduled send whose time passed while `newsletter run` was down still goes out if it
# is at most this late; later than that it is reported as missed and not sent.
misfire_grace_hours = 6
# How often `newsletter run` looks for jobs added by other commands.
poll_seconds = 1
# How often a standby `newsletter run` retries the scheduler lock held by another one.
lock_retry_seconds = 5
'''
