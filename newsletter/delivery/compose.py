"""From an issue and one recipient to the bytes on the wire: tailor, render (cached), personalise, build."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import jinja2

from newsletter import addresses
from newsletter.content.model import Issue
from newsletter.delivery import verp
from newsletter.delivery.verp import RowRef
from newsletter.mail.links import connect_token, read_token, recipient_links
from newsletter.mail.message import DkimKey, Envelope, dkim_sign, message_id, sender_address
from newsletter.mail.outgoing import Outgoing
from newsletter.mail.prepared import PreparedDigest, prepare
from newsletter.mail.settings import MailSettings
from newsletter.render.cache import BoundedCache, ProfileCache
from newsletter.render.digest import (
    DigestLinks,
    Recipient,
    RenderedDigest,
    personalise,
    recipient_values,
    render_digest,
)
from newsletter.tailor import Audience, ProfileKeys, Selection, profile_key, select_items
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


PROFILE_KEYS_KEPT = 65536  # about 10 MB of keys


@dataclass
class IssueContext:
    """Everything shared by all recipients of one issue; built once per send."""

    issue: Issue
    sectors: dict[str, SectorDef]
    embassies: dict[str, EmbassyDef]
    mail: MailSettings
    env: jinja2.Environment
    dkim: DkimKey | None = None
    cache: ProfileCache = field(default_factory=ProfileCache)
    prepared: BoundedCache[PreparedDigest] = field(default_factory=BoundedCache)
    # Profile keys by (language, embassy, sectors). A plain dict: a miss costs a few µs with
    # `ProfileKeys`, less than a locked LRU's bookkeeping on every hit; emptied when full
    # (`PROFILE_KEYS_KEPT`), so memory stays flat at any list size.
    profiles: dict[tuple[str, str, tuple[str, ...]], str] = field(default_factory=dict)

    @functools.cached_property
    def keys(self) -> ProfileKeys:
        """The issue's profile keys, computed without a selection per reader."""
        return ProfileKeys(self.issue)

    @property
    def links(self) -> DigestLinks:
        return DigestLinks(base_url=self.mail.base_url, read_token=self.mail.read_tokens)


@dataclass(frozen=True)
class Letter:
    """One recipient's message, in pieces until it is sent.

    The long pieces (a profile's encoded text and HTML) are the same objects for every recipient
    of that profile, so a batch of letters holds them, and pickles them, once per profile.
    """

    mail_from: str
    rcpt: str
    parts: tuple[bytes, ...]
    name: str  # a file-system-safe stem, unique within the campaign
    html_preview: str | None = None

    @property
    def size(self) -> int:
        return sum(map(len, self.parts))

    def outgoing(self) -> Outgoing:
        return Outgoing(
            mail_from=self.mail_from, rcpt=self.rcpt, data=b"".join(self.parts), name=self.name,
            html_preview=self.html_preview,
        )  # fmt: skip


@dataclass(frozen=True)
class Composed:
    letter: Letter
    profile: str
    message_id: str

    @property
    def outgoing(self) -> Outgoing:
        return self.letter.outgoing()


def audience_for(recipient: RecipientData, embassies: dict[str, EmbassyDef]) -> Audience:
    embassy = embassies.get(recipient.embassy)
    return Audience(
        sectors=frozenset(recipient.sectors),
        default_sectors=frozenset(embassy.default_sectors) if embassy else frozenset(),
        places=embassy.places if embassy else frozenset(),
    )


def select_for(ctx: IssueContext, recipient: RecipientData) -> Selection:
    return select_items(ctx.issue, audience_for(recipient, ctx.embassies))


def profile_for(ctx: IssueContext, recipient: RecipientData) -> str:
    """The recipient's profile key; recipients of one mission with the same sectors share it."""
    known = (recipient.language, recipient.embassy, recipient.sectors)
    key = ctx.profiles.get(known)
    if key is None:
        if len(ctx.profiles) >= PROFILE_KEYS_KEPT:
            ctx.profiles.clear()
        key = ctx.profiles[known] = ctx.keys.key(
            audience_for(recipient, ctx.embassies), recipient.language
        )
    return key


def _render(ctx: IssueContext, chosen: Selection, language: str) -> RenderedDigest:
    return render_digest(
        ctx.issue, chosen, language=language, sectors=ctx.sectors, links=ctx.links, env=ctx.env
    )


def digest_for(ctx: IssueContext, recipient: RecipientData) -> tuple[str, RenderedDigest]:
    """The recipient's profile key and (shared, unpersonalised) rendered digest."""
    key = profile_for(ctx, recipient)
    digest = ctx.cache.get_or_render(
        key, lambda: _render(ctx, select_for(ctx, recipient), recipient.language)
    )
    return key, digest


def tailored(ctx: IssueContext, recipient: RecipientData) -> tuple[Selection, str, RenderedDigest]:
    """The recipient's selection, profile key and (shared, unpersonalised) rendered digest."""
    chosen = select_for(ctx, recipient)
    key = profile_key(chosen, recipient.language)
    digest = ctx.cache.get_or_render(key, lambda: _render(ctx, chosen, recipient.language))
    return chosen, key, digest


def personalised(ctx: IssueContext, recipient: RecipientData) -> tuple[str, RenderedDigest]:
    key, digest = digest_for(ctx, recipient)
    unsubscribe, preferences, _ = recipient_links(ctx.mail, recipient.token_key)
    reader = read_token(ctx.mail, recipient.token_key)
    connect = connect_token(ctx.mail, recipient.token_key)
    return key, personalise(
        digest, Recipient(recipient.name, unsubscribe, preferences, reader, connect)
    )


def from_name(ctx: IssueContext, language: str) -> str:
    """The From display name: English readers get the publication's English name beside the
    Chinese one, when [sender] name is the publication's (as by default)."""
    name, issue = ctx.mail.sender.name, ctx.issue
    if language != "zh" and issue.title_en and name.strip() == issue.publication:
        return f"{name.strip()} {issue.title_en}"
    return name


def _prepared(ctx: IssueContext, key: str, digest: RenderedDigest) -> PreparedDigest:
    sender = ctx.mail.sender
    return ctx.prepared.get_or_render(
        key,
        lambda: prepare(
            digest,
            from_name=from_name(ctx, digest.language),
            from_address=sender.address,
            list_id=ctx.mail.list_id_header,
            reply_to=sender.reply_to,
        ),
    )


@dataclass(frozen=True)
class Profile:
    """A profile's digest, rendered and encoded once for every recipient who shares it."""

    key: str
    digest: RenderedDigest
    prepared: PreparedDigest


def marked_profile(ctx: IssueContext, recipient: RecipientData, prefix: str) -> Profile:
    """The recipient's profile with `prefix` before its subject, encoded afresh (not cached:
    the campaign's own profiles must never carry it)."""
    key, digest = digest_for(ctx, recipient)
    marked = replace(digest, subject=f"{prefix} {digest.subject}")
    sender = ctx.mail.sender
    prepared = prepare(
        marked, from_name=from_name(ctx, digest.language), from_address=sender.address,
        list_id=ctx.mail.list_id_header, reply_to=sender.reply_to,
    )  # fmt: skip
    return Profile(key, marked, prepared)


def profile_message(ctx: IssueContext, recipient: RecipientData) -> Profile:
    """The recipient's profile, rendered and encoded (cached).

    What fails here fails for everyone of the profile, whoever they are: the issue or the
    templates are at fault, not the recipient.
    """
    key, digest = digest_for(ctx, recipient)
    return Profile(key, digest, _prepared(ctx, key, digest))


def personal_message(
    ctx: IssueContext,
    recipient: RecipientData,
    profile: Profile,
    *,
    campaign_id: int,
    preview: bool,
    test_id: str = "",
) -> Composed:
    """The profile's encoded message with one recipient's address, name and links spliced in.

    What fails here (an address with no wire form, say) is this recipient's alone. `test_id`:
    a test send, with a Message-ID and file name of its own (no campaign's).
    """
    mail = ctx.mail
    unsubscribe, preferences, mailto = recipient_links(mail, recipient.token_key)
    to = addresses.wire(recipient.email)
    envelope = Envelope(
        from_address=mail.sender.address,
        from_name=from_name(ctx, profile.digest.language),
        to_address=to,
        to_name=recipient.name,
        message_id=(
            f"<test.{test_id}@{mail.domain}>"
            if test_id
            else message_id(mail.secret, campaign_id, recipient.subscriber_id, mail.domain)
        ),
        list_id=mail.list_id_header,
        unsubscribe_url=unsubscribe,
        unsubscribe_mailto=mailto,
        reply_to=mail.sender.reply_to,
    )
    digest = profile.digest
    who = Recipient(
        recipient.name, unsubscribe, preferences, read_token(mail, recipient.token_key),
        connect_token(mail, recipient.token_key),
    )  # fmt: skip
    text_values, html_values = recipient_values(who, digest.language)
    parts = profile.prepared.parts(envelope, text_values, html_values)
    if ctx.dkim is not None:
        data = b"".join(parts)
        signed = dkim_sign(data, ctx.dkim)  # the DKIM-Signature header, then `data`
        parts = [signed[: len(signed) - len(data)], *parts]
    letter = Letter(
        mail_from=(
            verp.return_path(
                mail.secret, RowRef(campaign_id, recipient.subscriber_id), mail.bounce_domain
            )
            if mail.bounce_domain and not test_id
            else sender_address(mail.sender.address, "[sender] address")
        ),  # fmt: skip
        rcpt=to,
        parts=tuple(parts),
        name=(
            f"test-{test_id}"
            if test_id
            else f"{campaign_id:04d}-{recipient.embassy}-{recipient.subscriber_id:06d}"
        ),
        html_preview=personalise(digest, who).html if preview else None,
    )
    return Composed(letter, profile.key, envelope.message_id)


def compose(
    ctx: IssueContext, recipient: RecipientData, *, campaign_id: int, preview: bool
) -> Composed:
    """One recipient's message: the profile's encoded message with their values spliced in."""
    profile = profile_message(ctx, recipient)
    return personal_message(ctx, recipient, profile, campaign_id=campaign_id, preview=preview)
