"""What the templates see: an issue's items in sections, with HTML, text and links ready."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from markupsafe import Markup

from newsletter.content.model import SECTION_BY_CODE, SECTIONS, Issue, Item, Section
from newsletter.render import markdown
from newsletter.render.labels import Chrome
from newsletter.taxonomy import SectorDef

_LABELLED = re.compile(r"^(免责声明|disclaimer)\s*[:：]\s*", re.IGNORECASE)


@dataclass(frozen=True)
class ItemView:
    number: int
    id: str
    title: str
    summary: str
    body_html: Markup
    body_text: str
    source: str | None  # http(s) only; anything else is shown as text, never linked
    source_text: str  # the whole source as written, for the text part
    source_label: str  # the host, short enough for a 320 px screen
    web_url: str
    read_more: str | None  # the web anchor, when the body was cut to fit the size limit
    sectors: tuple[str, ...]  # display names in the chrome language
    connect_url: str | None = None  # "connect me" (a demand item, in a digest only)


@dataclass(frozen=True)
class SectionView:
    code: str
    heading: str
    items: tuple[ItemView, ...]


@dataclass(frozen=True)
class GroupView:
    heading: str
    sections: tuple[SectionView, ...]


@dataclass(frozen=True)
class LinkView:
    title: str
    url: str


def archive_url(base_url: str, slug: str, language: str = "zh") -> str:
    """The web version; English readers get its English chrome (Chinese is the page's default)."""
    query = "" if language == "zh" else f"?lang={language}"
    return f"{base_url.rstrip('/')}/archive/{slug}{query}"


def disclaimer_text(issue: Issue) -> str:
    # The issue file may carry the label itself; templates add it in the reader's language.
    return _LABELLED.sub("", issue.disclaimer.strip())


def sector_name(code: str, sectors: Mapping[str, SectorDef], chrome: Chrome) -> str:
    found = sectors.get(code)
    if found is None:
        return code
    return found.zh if chrome.language == "zh" else found.en


@dataclass(frozen=True)
class SectorMention:
    """One of the reader's sectors as the digest names it, and whether this issue has items."""

    name: str
    matched: bool


def reader_sectors(
    interests: Collection[str],
    matched: Collection[str],
    sectors: Mapping[str, SectorDef],
    chrome: Chrome,
) -> tuple[SectorMention, ...]:
    """Every sector of the reader's, in the taxonomy's order, those with items in this issue
    marked: listing only the matched ones made readers think the others were lost."""
    known = [code for code in sectors if code in interests]
    others = sorted(code for code in interests if code not in sectors)
    return tuple(
        SectorMention(sector_name(code, sectors, chrome), code in matched)
        for code in (*known, *others)
    )


def _source(raw: str | None) -> tuple[str | None, str, str]:
    text = (raw or "").strip().strip("<>").strip()
    parts = urlsplit(text)
    if parts.scheme in {"http", "https"} and parts.netloc:
        return text, text, parts.hostname or parts.netloc
    return None, text, text


def item_view(
    item: Item,
    number: int,
    *,
    web: str,
    body: str,
    sectors: Mapping[str, SectorDef],
    chrome: Chrome,
    connect: Callable[[str], str] | None = None,
) -> ItemView:
    link, source_text, label = _source(item.source)
    return ItemView(
        number=number,
        id=item.id,
        title=item.title,
        summary=item.summary,
        body_html=Markup(markdown.to_html(body)),  # sanitised by nh3 in to_html
        body_text=markdown.to_text(body),
        source=link,
        source_text=source_text,
        source_label=label,
        web_url=f"{web}#{item.id}",
        read_more=f"{web}#{item.id}" if body != item.body else None,
        sectors=tuple(sector_name(code, sectors, chrome) for code in item.sectors),
        connect_url=connect(item.id) if connect and item.connectable else None,
    )


def _section_of(item: Item) -> Section:
    # Items reach here validated; an unknown section still renders, under its code.
    code = item.section
    return SECTION_BY_CODE.get(code) or Section(code, code, code, "", "")


def _ordered_sections(items: Collection[Item]) -> list[Section]:
    known = [s for s in SECTIONS if any(i.section == s.code for i in items)]
    others = {i.section: _section_of(i) for i in items if i.section not in SECTION_BY_CODE}
    return [*known, *others.values()]


def group_items(
    issue: Issue,
    included: Collection[str],
    *,
    web: str,
    bodies: Mapping[str, str],
    sectors: Mapping[str, SectorDef],
    chrome: Chrome,
    connect: Callable[[str], str] | None = None,
) -> tuple[GroupView, ...]:
    """Included items by group and section, in section order, numbered through; no empty ones."""
    chosen = [item for item in issue.items if item.id in included]
    groups: dict[str, list[SectionView]] = {}
    number = 0
    for section in _ordered_sections(chosen):
        views = []
        for item in (i for i in chosen if i.section == section.code):
            number += 1
            body = bodies.get(item.id, item.body)
            view = item_view(
                item, number, web=web, body=body, sectors=sectors, chrome=chrome, connect=connect
            )
            views.append(view)
        heading = chrome.group_heading(section) if section.group_zh else ""
        groups.setdefault(heading, []).append(
            SectionView(section.code, chrome.section_heading(section), tuple(views))
        )
    return tuple(GroupView(heading, tuple(views)) for heading, views in groups.items())


def left_out(issue: Issue, included: Collection[str], *, web: str) -> tuple[LinkView, ...]:
    return tuple(
        LinkView(item.title, f"{web}#{item.id}") for item in issue.items if item.id not in included
    )
