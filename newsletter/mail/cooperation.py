"""The mail that tells an issue's contact a reader can connect a partner with a demand."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

import jinja2

from newsletter import addresses
from newsletter.config import Settings
from newsletter.mail.message import DkimKey, Envelope, dkim_sign, sender_address, single_message
from newsletter.mail.outgoing import Outgoing
from newsletter.render.environment import render_template

TEMPLATES = ("connect_notice.subject.j2", "connect_notice.txt.j2", "connect_notice.html.j2")


@dataclass(frozen=True)
class Notice:
    """One request as the contact reads it: who, for which item, with whom, and where to follow."""

    request_id: int
    contact: str
    issue: str
    item_id: str
    item_title: str
    mission: str
    reader: str
    reader_email: str
    note: str
    organisation: str
    country: str
    updated: bool  # the reader answered the item again: their note changed


def notice_message(
    settings: Settings,
    env: jinja2.Environment,
    notice: Notice,
    *,
    now: dt.datetime,
    dkim: DkimKey | None = None,
) -> Outgoing:
    context = {"n": notice, "publication": settings.sender.name}
    subject, text, html = (render_template(env, name, context) for name in TEMPLATES)
    # Not list mail, but the headers every message of ours carries still need a way out:
    # a reply to the sender reaches the editorial office.
    envelope = Envelope(
        from_address=settings.sender.address, from_name=settings.sender.name,
        to_address=notice.contact, to_name="",
        message_id=f"<connect.{secrets.token_hex(10)}@{settings.domain}>",
        list_id=f"{settings.list_id}.{settings.domain}",
        unsubscribe_url=f"{settings.base_url}/archive",
        unsubscribe_mailto=f"mailto:{settings.sender.address}",
        reply_to=notice.reader_email or settings.sender.reply_to,
    )  # fmt: skip
    data = single_message(envelope, subject=" ".join(subject.split()), text=text, html=html)
    if dkim is not None:
        data = dkim_sign(data, dkim)
    return Outgoing(
        mail_from=sender_address(settings.sender.address, "[sender] address"),
        rcpt=addresses.wire(notice.contact), data=data,
        name=f"connect-{notice.request_id}-{now:%Y%m%dT%H%M%S}",
    )  # fmt: skip
