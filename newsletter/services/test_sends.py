"""A test send: one digest, to one address of the staff member's choosing, through the
configured transport, and nothing else.

Rendered as one subscriber would get it (`as_email`), or the whole issue untailored. Its subject
says it is a test; it has no ledger row and no campaign, so it burns nothing; and its
unsubscribe and preferences links are signed for a throwaway key that names nobody, so a click
on a forwarded test can never change the real subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from newsletter import addresses, runtime
from newsletter.actors import Actor, Scope
from newsletter.config import Settings
from newsletter.db import Engine, Session
from newsletter.delivery.compose import RecipientData, marked_profile, personal_message
from newsletter.delivery.transports import deliver
from newsletter.errors import DeliveryError
from newsletter.services.previews import Audience, synthetic_recipient
from newsletter.services.sending import Route, recipient_data, route
from newsletter.services.units import database
from newsletter.subscriptions import store

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "[测试 TEST]"


@dataclass(frozen=True)
class TestSend:
    """What went where: the address, whose digest it was ("" for the whole issue), the reply."""

    __test__ = False  # not a pytest test class, whatever its name

    issue: str
    to: str
    rendered_as: str
    subject: str
    message_id: str
    route: Route
    reply: str

    def as_dict(self) -> dict[str, object]:
        return {
            "issue": self.issue, "to": self.to, "as": self.rendered_as, "subject": self.subject,
            "message_id": self.message_id, "transport": self.route.transport,
            "destination": self.route.destination, "reply": self.reply,
        }  # fmt: skip


def _whole_issue(to: str) -> RecipientData:
    # No sectors and no mission: the tailoring keeps every item (see `tailor.decide`).
    return RecipientData(
        subscriber_id=0, email=to, name="", language="zh", embassy="", sectors=(), token_key=""
    )


def send_test(
    settings: Settings,
    slug: str,
    to: str,
    *,
    actor: Actor,
    scope: Scope,
    as_email: str | None = None,
    audience: Audience | None = None,
    transport: str | None = None,
    outbox: Path | None = None,
    db: Engine | None = None,
) -> TestSend:
    """Send one test digest of the issue to `to` only; `DeliveryError` if the server refused it.

    `as_email`: rendered as that subscriber (their sectors, mission, language and name; never
    their links); `audience`: as a made-up reader of the console's preview. An audit line
    records it, in that subscriber's history when there is one.
    """
    address = addresses.normalise(to)
    with database(settings, db) as engine, Session(engine, expire_on_commit=False) as session:
        context = runtime.issue_context(session, settings, slug)
        subscriber = store.find(session, as_email) if as_email else None
        if as_email:
            base = recipient_data(session, as_email, scope)
        elif audience is not None:  # the console's made-up reader: mission, sectors, language
            base = synthetic_recipient(context, audience, scope)
        else:
            base = _whole_issue(address)
        # A fresh random key: links that verify as genuine, and find no subscriber.
        recipient = RecipientData(
            subscriber_id=base.subscriber_id, email=address, name=base.name,
            language=base.language, embassy=base.embassy, sectors=base.sectors,
            token_key=secrets.token_urlsafe(24),
        )  # fmt: skip
        profile = marked_profile(context, recipient, SUBJECT_PREFIX)
        path = route(settings, transport, outbox)
        composed = personal_message(
            context, recipient, profile, campaign_id=0, preview=path.transport == "file",
            test_id=secrets.token_hex(8),
        )  # fmt: skip
        sender = runtime.make_transport(settings, transport, outbox)
        [reply] = asyncio.run(deliver(sender, [composed.outgoing]))
        if not 200 <= reply.code < 300:
            raise DeliveryError(
                f"test send of {slug} to {address} failed through the {path.transport} transport "
                f"({path.destination}): {reply}; check `[smtp]` in the config, or try "
                "`--transport file`"
            )
        rendered_as = subscriber.email if subscriber is not None else ""
        detail = f"test send of {slug} to {address}" + (
            f" rendered as this subscriber ({path.transport})"
            if subscriber
            else f" ({path.transport})"
        )
        if subscriber is not None:
            store.audit(
                session, subscriber, "test_send", actor=actor.label,
                via=actor.via, detail=detail,
            )  # fmt: skip
        else:
            store.audit_unlisted(
                session, "test_send", actor=actor.label, via=actor.via, detail=detail
            )
        session.commit()
    log.info("%s (via %s): %s", actor.label, actor.via, detail)
    return TestSend(
        issue=slug, to=address, rendered_as=rendered_as, subject=profile.digest.subject,
        message_id=composed.message_id, route=path, reply=str(reply),
    )  # fmt: skip
