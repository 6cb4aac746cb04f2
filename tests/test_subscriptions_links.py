"""Signed links, lifecycle rules and rate limits, without the web or the CLI around them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlmodel import Session

from newsletter.db import make_engine
from newsletter.models import Subscriber, SubscriberStatus, utcnow
from newsletter.subscriptions import lifecycle, store
from newsletter.subscriptions.lifecycle import Actor, TransitionError
from newsletter.subscriptions.lists import ListRow
from newsletter.tokens import (
    CONFIRM_LIFETIME,
    InvalidToken,
    Purpose,
    confirm_token,
    make_token,
    read_token,
)
from newsletter.web.limits import client_key
from tests.conftest import Instance

SECRET = b"s" * 40
NOW = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)
ME = Actor("subscriber", "link")


def test_a_token_names_its_subscriber_and_nothing_else_passes() -> None:
    token = make_token(SECRET, Purpose.UNSUBSCRIBE, "key-1")
    assert read_token(SECRET, token, Purpose.UNSUBSCRIBE, now=NOW) == "key-1"
    payload, mac = token.split(".")
    tampered = [
        token + "x",
        f"{payload}.{mac[:-2]}AA",
        f"{payload[:-2]}AA.{mac}",
        make_token(b"t" * 40, Purpose.UNSUBSCRIBE, "key-1"),  # another instance's secret
        "",
        "no-dot",
        "a.b.c",
        "é.é",
    ]
    for bad in tampered:
        with pytest.raises(InvalidToken) as caught:
            read_token(SECRET, bad, Purpose.UNSUBSCRIBE, now=NOW)
        assert str(caught.value) == "this link is not valid or has expired"
    with pytest.raises(InvalidToken):  # right subscriber, wrong purpose
        read_token(SECRET, token, Purpose.PREFERENCES, now=NOW)


def test_confirmation_links_expire_after_seven_days() -> None:
    token = confirm_token(SECRET, "key-1", now=NOW)
    assert read_token(SECRET, token, Purpose.CONFIRM, now=NOW + CONFIRM_LIFETIME) == "key-1"
    with pytest.raises(InvalidToken):
        read_token(
            SECRET, token, Purpose.CONFIRM, now=NOW + CONFIRM_LIFETIME + dt.timedelta(seconds=1)
        )
    assert CONFIRM_LIFETIME == dt.timedelta(days=7)


def test_ip_limits_count_an_ipv6_network_as_one_client() -> None:
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff") == "2001:db8::/64"
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key(None) == "unknown"


@pytest.fixture
def session(instance: Instance) -> Iterator[Session]:
    engine = make_engine(instance.settings.resolved_database_url)
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


def _pending(session: Session) -> Subscriber:
    row = ListRow("p@example.org", "P", "", "de-berlin", ("ai",), "zh", "test", 0)
    return store.add(session, row, status=SubscriberStatus.PENDING, actor="t", via="test")


def test_confirm_then_unsubscribe_then_stale_link_cannot_undo_it(session: Session) -> None:
    subscriber = _pending(session)
    token = confirm_token(SECRET, subscriber.token_key, now=utcnow())
    found, claim = lifecycle.from_token(session, SECRET, token, Purpose.CONFIRM, now=utcnow())
    assert found.id == subscriber.id
    assert lifecycle.confirm(session, found, claim, actor=ME)
    assert not lifecycle.confirm(session, found, claim, actor=ME)  # idempotent
    lifecycle.unsubscribe(session, found, actor=ME)
    session.commit()
    found.status_changed_at += dt.timedelta(seconds=2)  # the unsubscribe came later
    with pytest.raises(InvalidToken):
        lifecycle.confirm(session, found, claim, actor=ME)
    fresh = confirm_token(
        SECRET, found.token_key, now=found.status_changed_at + dt.timedelta(seconds=5)
    )
    _, renewed = lifecycle.from_token(session, SECRET, fresh, Purpose.CONFIRM, now=utcnow())
    assert lifecycle.confirm(session, found, renewed, actor=ME)
    assert found.status == SubscriberStatus.ACTIVE


def test_a_token_for_no_stored_subscriber_is_refused(session: Session) -> None:
    token = make_token(SECRET, Purpose.UNSUBSCRIBE, "nobody-has-this-key")
    with pytest.raises(InvalidToken):
        lifecycle.from_token(session, SECRET, token, Purpose.UNSUBSCRIBE, now=NOW)


def test_only_allowed_transitions_happen(session: Session) -> None:
    subscriber = _pending(session)
    lifecycle.change(session, subscriber, SubscriberStatus.COMPLAINED, actor=ME)
    with pytest.raises(TransitionError, match="complained cannot become bounced"):
        lifecycle.change(session, subscriber, SubscriberStatus.BOUNCED, actor=ME)
    assert not lifecycle.unsubscribe(
        session, subscriber, actor=ME
    )  # a complaint already stops mail
