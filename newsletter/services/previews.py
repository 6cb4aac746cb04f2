"""What one reader would get of an issue, for the console's preview: a real subscriber (within
the actor's missions) or an audience made up for the look (mission, sectors, language).

The rendering is the real one, message and all: HTML, text, headers, the `.eml` bytes and their
size against Gmail's clip, and why each item is in or out. Its links are signed for a throwaway
key, so a click in a preview or a downloaded `.eml` can never unsubscribe the real diplomat.
"""

from __future__ import annotations

import email.parser
import email.policy
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

from newsletter import directory, runtime
from newsletter.actors import Scope
from newsletter.config import Settings
from newsletter.db import Engine, Session
from newsletter.delivery.compose import (
    IssueContext,
    RecipientData,
    personal_message,
    personalised,
    profile_message,
    tailored,
)
from newsletter.errors import NewsletterError, NotFoundError
from newsletter.render.digest import HTML_LIMIT
from newsletter.services.sending import Decision, recipient_data
from newsletter.services.subscribers import list_subscribers
from newsletter.services.units import database, unit_of_work
from newsletter.subscriptions.lists import LANGUAGES
from newsletter.tailor import Selection

# Gmail shows "[Message clipped]" past about 102 KB of a message's HTML; the renderer cuts long
# bodies to stay under the same figure, so the preview measures against it too.
GMAIL_CLIP = HTML_LIMIT
# Within this share of the clip, the preview warns before it is reached.
NEAR_CLIP = 0.9
PREVIEW_TO = "reader@preview.invalid"  # a synthetic audience has no address: one that goes nowhere


class AudienceError(NewsletterError, ValueError):
    """A synthetic audience names a sector or language the instance does not offer."""


@dataclass(frozen=True)
class Audience:
    """A reader made up for a preview: `mission` "" (with no sectors) is the whole issue."""

    mission: str = ""
    sectors: tuple[str, ...] = ()
    language: str = "zh"


@dataclass(frozen=True)
class Rendering:
    slug: str
    rendered_as: str  # the subscriber's address, "" for a synthetic audience
    mission: str
    language: str
    interests: tuple[str, ...]  # empty: the whole issue
    mission_defaults: bool  # the interests are the mission's: the reader chose none
    subject: str
    html: str
    text: str
    headers: tuple[tuple[str, str], ...]
    eml: bytes
    decisions: tuple[Decision, ...]
    cut_items: tuple[str, ...] = ()  # bodies the renderer shortened to stay under the clip

    @property
    def html_size(self) -> int:
        return len(self.html.encode("utf-8"))

    @property
    def size(self) -> int:
        return len(self.eml)

    @property
    def clipped(self) -> bool:
        return self.html_size >= GMAIL_CLIP

    @property
    def near_clip(self) -> bool:
        return not self.clipped and self.html_size >= GMAIL_CLIP * NEAR_CLIP


def synthetic_recipient(context: IssueContext, audience: Audience, scope: Scope) -> RecipientData:
    """The made-up reader; a mission outside `scope` is not there at all, as for a person."""
    mission = audience.mission.strip()
    if mission and (mission not in context.embassies or not scope.allows(mission)):
        raise NotFoundError("mission", mission, "see `newsletter embassies list`")
    unknown = [code for code in audience.sectors if code not in context.sectors]
    if unknown:
        raise AudienceError(f"unknown sector {', '.join(unknown)}; see `newsletter sectors list`")
    if audience.language not in LANGUAGES:
        raise AudienceError(f"language {audience.language!r}: use one of {', '.join(LANGUAGES)}")
    return RecipientData(
        subscriber_id=0, email=PREVIEW_TO, name="", language=audience.language,
        embassy=mission, sectors=tuple(dict.fromkeys(audience.sectors)), token_key="",
    )  # fmt: skip


def _decisions(selection: Selection) -> tuple[Decision, ...]:
    # As `sending.explain_digest` words them for `newsletter explain`.
    return tuple(
        Decision(
            str(d.item_id), d.section, d.included, d.explain(), d.reason.value, tuple(d.matched)
        )
        for d in selection.decisions
    )


def render_preview(
    settings: Settings,
    slug: str,
    *,
    scope: Scope,
    subscriber: str | None = None,
    audience: Audience | None = None,
    db: Engine | None = None,
) -> Rendering:
    """The message `subscriber` (or `audience`) would get of the issue, not sent, not stored."""
    with database(settings, db) as engine, Session(engine, expire_on_commit=False) as session:
        context = runtime.issue_context(session, settings, slug)
        if subscriber:
            base = recipient_data(session, subscriber, scope)
        else:
            base = synthetic_recipient(context, audience or Audience(), scope)
    recipient = replace(base, token_key=secrets.token_urlsafe(24))
    selection, _key, _digest = tailored(context, recipient)
    _, personal = personalised(context, recipient)
    profile = profile_message(context, recipient)
    composed = personal_message(
        context, recipient, profile, campaign_id=0, preview=False,
        test_id=f"preview.{secrets.token_hex(8)}",
    )  # fmt: skip
    eml = composed.outgoing.data
    parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(eml)
    return Rendering(
        slug=slug, rendered_as=base.email if subscriber else "", mission=recipient.embassy,
        language=recipient.language, interests=tuple(sorted(selection.interests)),
        mission_defaults=not recipient.sectors and bool(selection.interests),
        subject=personal.subject, html=personal.html, text=personal.text,
        headers=tuple((name, str(value)) for name, value in parsed.items()), eml=eml,
        decisions=_decisions(selection), cut_items=tuple(personal.cut_items),
    )  # fmt: skip


@dataclass(frozen=True)
class Choice:
    code: str
    label: str


@dataclass(frozen=True)
class Choices:
    """What a synthetic audience can be made of, within the actor's missions."""

    missions: tuple[Choice, ...]
    sectors: tuple[Choice, ...]
    languages: Sequence[str]


def audience_choices(settings: Settings, *, scope: Scope, db: Engine | None = None) -> Choices:
    with unit_of_work(settings, db, commit=False) as session:
        embassies = directory.embassies(session)
        sectors = directory.sectors(session)
    return Choices(
        tuple(
            Choice(code, f"{e.name_zh} {e.name_en}")
            for code, e in sorted(embassies.items())
            if scope.allows(code)
        ),
        tuple(Choice(code, f"{s.zh} {s.en}") for code, s in sectors.items()),
        LANGUAGES,
    )


@dataclass(frozen=True)
class Found:
    email: str
    name: str
    mission: str
    status: str


def find_subscribers(
    settings: Settings, query: str, *, scope: Scope, limit: int = 20, db: Engine | None = None
) -> list[Found]:
    """Subscribers of the actor's missions whose address or name holds `query`: someone outside
    those missions is never found, whatever is typed."""
    wanted = query.strip().casefold()
    if not wanted:
        return []
    found = [
        Found(v.email, v.name, v.embassy, v.status)
        for v in list_subscribers(settings, scope=scope, db=db)
        if wanted in v.email.casefold() or wanted in v.name.casefold()
    ]
    return found[:limit]
