"""Subscription mail (confirm, already subscribed, invite) built from templates, ready to send."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import jinja2

from newsletter import addresses
from newsletter.config import Settings
from newsletter.mail.links import recipient_links
from newsletter.mail.message import DkimKey, Envelope, dkim_sign, sender_address, single_message
from newsletter.mail.outgoing import Outgoing
from newsletter.render.environment import render_template
from newsletter.tokens import CONFIRM_LIFETIME, confirm_token

TEMPLATES = ("subscription.subject.j2", "subscription.txt.j2", "subscription.html.j2")


class MailKind(StrEnum):
    CONFIRM = "confirm"  # new, pending or departed: a link to confirm
    ALREADY = "already"  # active: a reminder with the preferences link, nothing to confirm
    INVITE = "invite"  # put on the list by staff (import, handover): a link to confirm


class Addressee(Protocol):
    """What a subscription mail needs of a subscriber (a stored `Subscriber` is one)."""

    @property
    def email(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def token_key(self) -> str: ...
    @property
    def consent_source(self) -> str: ...


@dataclass(frozen=True)
class MailRequest:
    """A message to send to one subscriber about their subscription."""

    kind: MailKind
    address: str
    name: str
    language: str
    token_key: str

    @classmethod
    def about(cls, kind: MailKind, subscriber: Addressee) -> MailRequest:
        """The request for `kind`, naming the person only by a name staff gave.

        A name typed into the public form is never used: whoever filled it in may not own the
        address, and a greeting they wrote would reach a stranger's inbox under our name.
        """
        staff_named = kind is MailKind.INVITE or not subscriber.consent_source.startswith("web:")
        name = subscriber.name if staff_named else ""
        return cls(kind, subscriber.email, name, subscriber.language, subscriber.token_key)


def _one_line(name: str) -> str:
    # Stored names hold no controls (`check_text`); a line break would still split a header.
    return " ".join(name.split())


def _context(settings: Settings, request: MailRequest, now: dt.datetime) -> dict[str, object]:
    unsubscribe, preferences, _ = recipient_links(settings, request.token_key)
    confirm = confirm_token(settings.secret, request.token_key, now=now)
    # `request.name` is only ever one staff gave (see `MailRequest.about`).
    return {
        "name": _one_line(request.name),
        "kind": request.kind.value,
        "already": request.kind is MailKind.ALREADY,
        "invite": request.kind is MailKind.INVITE,
        "publication": settings.sender.name,
        "confirm_url": f"{settings.base_url}/confirm/{confirm}",
        "preferences_url": preferences,
        "unsubscribe_url": unsubscribe,
        "subscribe_url": f"{settings.base_url}/subscribe",
        "days": CONFIRM_LIFETIME.days,
    }


def subscription_message(
    settings: Settings,
    env: jinja2.Environment,
    request: MailRequest,
    *,
    now: dt.datetime,
    dkim: DkimKey | None = None,
) -> Outgoing:
    """The confirmation (or "already subscribed") message for one address, ready to send."""
    context = _context(settings, request, now)
    subject, text, html = (render_template(env, name, context) for name in TEMPLATES)
    unsubscribe, _, mailto = recipient_links(settings, request.token_key)
    envelope = Envelope(
        from_address=settings.sender.address, from_name=settings.sender.name,
        to_address=request.address, to_name=_one_line(request.name),
        message_id=f"<{request.kind.value}.{secrets.token_hex(10)}@{settings.domain}>",
        list_id=f"{settings.list_id}.{settings.domain}", unsubscribe_url=unsubscribe,
        unsubscribe_mailto=mailto, reply_to=settings.sender.reply_to,
    )  # fmt: skip
    data = single_message(envelope, subject=subject.strip(), text=text, html=html)
    if dkim is not None:
        data = dkim_sign(data, dkim)
    name = f"{request.kind.value}-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
    # The envelope in its ASCII form (an A-label domain): no SMTPUTF8 needed unless the local
    # part itself is not ASCII.
    return Outgoing(
        mail_from=sender_address(settings.sender.address, "[sender] address"),
        rcpt=addresses.wire(request.address), data=data, name=name,
    )  # fmt: skip
