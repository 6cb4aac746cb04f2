"""From an issue and one recipient to the bytes on the wire: tailor, render (cached), personalise, build."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

import jinja2

from newsletter.config import Settings
from newsletter.content.model import Issue
from newsletter.delivery.message import DkimKey, Envelope, dkim_sign, message_id
from newsletter.delivery.prepared import PreparedDigest, prepare
from newsletter.delivery.transports import Outgoing
from newsletter.render.cache import BoundedCache, ProfileCache
from newsletter.render.digest import (
    DigestLinks,
    Recipient,
    RenderedDigest,
    personalise,
    recipient_values,
    render_digest,
)
from newsletter.subscriptions.tokens import Purpose, make_token
from newsletter.tailor import Audience, Selection, profile_key, select_items
from newsletter.taxonomy import EmbassyDef, SectorDef


@dataclass(frozen=True)
class RecipientData:
    subscriber_id: int
    email: str
    name: str
    language: str
    embassy: str
    sectors: tuple[str, ...]
    token_key: str


@dataclass
class IssueContext:
    """Everything shared by all recipients of one issue; built once per send."""

    issue: Issue
    sectors: dict[str, SectorDef]
    embassies: dict[str, EmbassyDef]
    settings: Settings
    env: jinja2.Environment
    dkim: DkimKey | None = None
    cache: ProfileCache = field(default_factory=ProfileCache)
    prepared: BoundedCache[PreparedDigest] = field(default_factory=BoundedCache)
    selections: BoundedCache[Selection] = field(default_factory=lambda: BoundedCache(maxsize=8192))

    @property
    def links(self) -> DigestLinks:
        return DigestLinks(base_url=self.settings.base_url)


@dataclass(frozen=True)
class Composed:
    outgoing: Outgoing
    profile: str
    message_id: str


def audience_for(recipient: RecipientData, embassies: dict[str, EmbassyDef]) -> Audience:
    embassy = embassies.get(recipient.embassy)
    return Audience(
        sectors=frozenset(recipient.sectors),
        default_sectors=frozenset(embassy.default_sectors) if embassy else frozenset(),
        places=embassy.places if embassy else frozenset(),
    )


def selection_for(ctx: IssueContext, recipient: RecipientData) -> tuple[Selection, str]:
    """The recipient's selection and profile key; many recipients share an audience, so cached."""
    audience = audience_for(recipient, ctx.embassies)
    selection = ctx.selections.get_or_render(
        repr((sorted(audience.interests), sorted(audience.places))),
        lambda: select_items(ctx.issue, audience),
    )
    return selection, profile_key(selection, recipient.language)


def tailored(ctx: IssueContext, recipient: RecipientData) -> tuple[Selection, str, RenderedDigest]:
    """The recipient's selection, profile key and (shared, unpersonalised) rendered digest."""
    selection, key = selection_for(ctx, recipient)
    digest = ctx.cache.get_or_render(
        key,
        lambda: render_digest(
            ctx.issue,
            selection,
            language=recipient.language,
            sectors=ctx.sectors,
            links=ctx.links,
            env=ctx.env,
        ),  # fmt: skip
    )
    return selection, key, digest


def recipient_links(settings: Settings, token_key: str) -> tuple[str, str, str]:
    """Unsubscribe URL, preferences URL and unsubscribe mailto for one subscriber."""
    secret = settings.secret
    unsubscribe = make_token(secret, Purpose.UNSUBSCRIBE, token_key)
    preferences = make_token(secret, Purpose.PREFERENCES, token_key)
    mailto = f"mailto:{settings.sender.address}?subject={quote('unsubscribe ' + unsubscribe)}"
    return (
        f"{settings.base_url}/unsubscribe/{unsubscribe}",
        f"{settings.base_url}/preferences/{preferences}",
        mailto,
    )


def personalised(ctx: IssueContext, recipient: RecipientData) -> tuple[str, RenderedDigest]:
    _, key, digest = tailored(ctx, recipient)
    unsubscribe, preferences, _ = recipient_links(ctx.settings, recipient.token_key)
    return key, personalise(digest, Recipient(recipient.name, unsubscribe, preferences))


def _prepared(ctx: IssueContext, key: str, digest: RenderedDigest) -> PreparedDigest:
    sender = ctx.settings.sender
    return ctx.prepared.get_or_render(
        key,
        lambda: prepare(
            digest,
            from_name=sender.name,
            from_address=sender.address,
            list_id=f"{ctx.settings.list_id}.{ctx.settings.domain}",
            reply_to=sender.reply_to,
        ),
    )


def compose(
    ctx: IssueContext, recipient: RecipientData, *, campaign_id: int, preview: bool
) -> Composed:
    """One recipient's message: the profile's encoded message with their values spliced in."""
    _, key, digest = tailored(ctx, recipient)
    settings = ctx.settings
    unsubscribe, preferences, mailto = recipient_links(settings, recipient.token_key)
    envelope = Envelope(
        from_address=settings.sender.address,
        from_name=settings.sender.name,
        to_address=recipient.email,
        to_name=recipient.name,
        message_id=message_id(
            settings.secret, campaign_id, recipient.subscriber_id, settings.domain
        ),
        list_id=f"{settings.list_id}.{settings.domain}",
        unsubscribe_url=unsubscribe,
        unsubscribe_mailto=mailto,
        reply_to=settings.sender.reply_to,
    )
    who = Recipient(recipient.name, unsubscribe, preferences)
    text_values, html_values = recipient_values(who, digest.language)
    data = _prepared(ctx, key, digest).message(envelope, text_values, html_values)
    if ctx.dkim is not None:
        data = dkim_sign(data, ctx.dkim)
    outgoing = Outgoing(
        mail_from=settings.sender.address,
        rcpt=recipient.email,
        data=data,
        name=f"{campaign_id:04d}-{recipient.embassy}-{recipient.subscriber_id:06d}",
        html_preview=personalise(digest, who).html if preview else None,
    )
    return Composed(outgoing, key, envelope.message_id)
