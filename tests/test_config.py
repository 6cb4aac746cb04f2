"""Settings: one default per option, read-only once loaded, unknown keys named, no secrets in the core."""

from __future__ import annotations

import pickle
import tomllib
from pathlib import Path

import pydantic
import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from newsletter import runtime
from newsletter.config import (
    SECTIONS,
    DeliverySettings,
    Settings,
    load_settings,
    sample_config,
)
from newsletter.content.issue_intake import sample_issue_path
from newsletter.delivery.batches import HelperSetup
from newsletter.delivery.engine import RetryPolicy
from newsletter.testing.sink import LoopbackController
from newsletter.web.limits import WebLimits
from tests.conftest import Instance, cli, fails


def _without_paths(settings: Settings) -> dict[str, object]:
    return settings.model_dump(exclude={"secret_key", "base_dir", "database_url"})


def test_the_sample_file_is_the_models_own_defaults(tmp_path: Path) -> None:
    text = sample_config()
    config = tmp_path / "newsletter.toml"
    config.write_text(text, encoding="utf-8")
    loaded = load_settings(config)
    assert _without_paths(loaded) == _without_paths(Settings())
    assert len(loaded.secret_key) >= 32
    # Every key written is a field, and every field is written (or, like a list left empty,
    # shown as an example to uncomment) with its description above it.
    values = tomllib.loads(text)
    fields: list[tuple[type[pydantic.BaseModel], dict[str, object], str]] = [
        *((Settings, values, n) for n in Settings.model_fields if n not in SECTIONS),
        *((m, values[s], n) for s, m in SECTIONS.items() for n in m.model_fields),
    ]
    for model, table, name in fields:
        if name == "base_dir":
            continue
        info = model.model_fields[name]
        assert info.description, f"{name} has no description"
        first_line = info.description.split()[0]
        assert f"# {first_line}" in text
        assert name in table or f"# {name} = " in text, name


def test_the_sample_names_the_database_it_was_given(tmp_path: Path) -> None:
    text = sample_config(database_url="postgresql+psycopg://staff@db/newsletter")
    assert tomllib.loads(text)["database_url"] == "postgresql+psycopg://staff@db/newsletter"
    assert tomllib.loads(sample_config())["database_url"] == "sqlite:///newsletter.db"
    assert tomllib.loads(text)["secret_key"] != tomllib.loads(sample_config())["secret_key"]


def test_loaded_settings_cannot_be_changed(instance: Instance) -> None:
    settings = instance.settings
    with pytest.raises(pydantic.ValidationError):
        settings.smtp.port = 2525  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        settings.transport = "smtp"  # type: ignore[misc]
    copy = settings.overridden({"transport": "smtp", "smtp.port": 2525, "smtp.host": None})
    assert (copy.transport, copy.smtp.port, copy.smtp.host) == ("smtp", 2525, "127.0.0.1")
    assert (settings.transport, settings.smtp.port) == ("file", 25)


def test_an_override_is_validated_like_the_file(instance: Instance) -> None:
    with pytest.raises(Exception, match="smtp.port"):
        instance.settings.overridden({"smtp.port": "not a port"})


@pytest.mark.parametrize(
    ("table", "line", "expected"),
    [
        ("[smtp]", 'hots = "relay"', "unknown key 'smtp.hots'; did you mean 'smtp.host'?"),
        ("", 'domian = "example.org"', "unknown key 'domian'; did you mean 'domain'?"),
        ("[delivery]", "batch = 10", "did you mean 'delivery.batch_size'?"),
        ("", "[smpt]\nhost = 'relay'", "unknown key 'smpt'; did you mean 'smtp'?"),
    ],
)
def test_an_unknown_key_is_named_with_the_nearest_known_one(
    runner: CliRunner, instance: Instance, table: str, line: str, expected: str
) -> None:
    text = instance.config.read_text(encoding="utf-8")
    if table:
        text = text.replace(f"\n{table}\n", f"\n{table}\n{line}\n", 1)
    else:
        text = f"{line}\n{text}" if not line.startswith("[") else f"{text}\n{line}\n"
    instance.config.write_text(text, encoding="utf-8")
    error = fails(runner, instance, "campaign", "list")
    assert expected in error
    assert str(instance.config) in error
    assert len(error.strip().splitlines()) == 1, error


def test_an_unknown_environment_key_is_named_with_the_nearest_known_one(
    runner: CliRunner, instance: Instance
) -> None:
    error = fails(runner, instance, "campaign", "list", env={"NEWSLETTER_SMTP__HOTS": "relay"})
    assert "NEWSLETTER_SMTP__HOTS" in error
    assert "did you mean NEWSLETTER_SMTP__HOST?" in error
    assert len(error.strip().splitlines()) == 1, error
    # A variable that resembles no setting is somebody else's.
    cli(runner, instance, "campaign", "list", env={"NEWSLETTER_UNRELATED_TOOL_HOME": "/x"})


def test_send_overrides_the_relay_without_touching_the_file(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    cli(runner, instance, "subscribers", "add", "li@example.org", "--embassy", "de-berlin")
    out = cli(runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-host",
              "127.0.0.1", "--smtp-port", str(smtp_server.port))  # fmt: skip
    assert [r.rcpt for r in smtp_server.handler.received] == ["li@example.org"], out
    assert instance.settings.smtp.port == 25


def test_the_helper_process_never_gets_the_smtp_password(
    runner: CliRunner, instance: Instance
) -> None:
    password = "relay-password-0f3c9a"
    text = instance.config.read_text(encoding="utf-8")
    instance.config.write_text(
        text.replace('password = ""', f'password = "{password}"', 1), encoding="utf-8"
    )
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    settings = instance.settings
    assert settings.smtp.password == password
    db = runtime.open_database(settings)
    try:
        with Session(db) as session:
            context = runtime.issue_context(session, settings, "2020-01")
        setup = HelperSetup.of(db, context)
    finally:
        db.dispose()
    assert setup is not None
    carried = pickle.dumps(setup)
    assert password.encode() not in carried
    assert context.mail.domain == settings.domain  # what building mail needs is there
    assert settings.secret_key.encode() in carried  # links are signed in the helper


def test_retry_policy_and_web_limits_have_no_defaults_of_their_own() -> None:
    delivery = DeliverySettings(retry_cap_seconds=90, retry_base_seconds=3, max_attempts=4)
    policy = RetryPolicy.from_settings(delivery)
    assert (policy.cap.total_seconds(), policy.base.total_seconds(), policy.max_attempts) == (
        90,
        3,
        4,
    )
    with pytest.raises(TypeError):
        RetryPolicy()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        WebLimits()  # type: ignore[call-arg]
    limits = WebLimits.from_settings(Settings(web={"subscribe_per_ip": 7}))
    assert (limits.subscribe_per_ip, limits.subscribe_per_address) == (7, 3)
