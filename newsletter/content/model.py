"""The issue model: an `Issue` of `Item`s grouped into fixed, bilingual sections."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Section:
    """A section of the journal; `group` is the column (动态 NEWS or 聚焦 FOCUS) it sits in."""

    code: str
    zh: str
    en: str
    group_zh: str
    group_en: str


SECTIONS: tuple[Section, ...] = (
    Section("policy", "政策", "Policy", "动态", "NEWS"),
    Section("research", "科研", "Research", "动态", "NEWS"),
    Section("parks", "园区/企业", "Parks & enterprises", "动态", "NEWS"),
    Section("demand", "需求", "Demand", "动态", "NEWS"),
    Section("focus", "聚焦", "Focus", "聚焦", "FOCUS"),
)
SECTION_BY_CODE: dict[str, Section] = {s.code: s for s in SECTIONS}
DEMAND = "demand"  # 需求: cooperation demands, each answerable with "connect me"
# Bounds a real issue is within; beyond them a typo, and the database's integers, would overflow.
YEARS = range(1900, 3000)
NUMBERS = range(1, 1000)


@dataclass(frozen=True)
class Item:
    """One news item or article.

    `body` is a small Markdown subset: paragraphs separated by blank lines, `## ` sub-headings,
    `1. ` / `- ` list lines, `**bold**`. `sectors` are taxonomy codes; `regions` ISO country or
    region codes; `always` puts the item in every digest; `actionable` gives it a "connect me"
    link as every 需求 (demand) item has.
    """

    id: str
    section: str
    title: str
    body: str
    source: str | None = None
    sectors: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    always: bool = False
    summary: str = ""
    actionable: bool = False

    @property
    def connectable(self) -> bool:
        """A reader can answer it with a partner: a cooperation demand, or marked so."""
        return self.actionable or self.section == DEMAND


@dataclass(frozen=True)
class Contact:
    phone: str = ""
    email: str = ""


@dataclass(frozen=True)
class Organiser:
    """A line of the masthead such as 主办单位：科技部国际合作司 (role, name)."""

    role: str
    name: str


@dataclass(frozen=True)
class Issue:
    publication: str
    year: int
    number: int
    items: tuple[Item, ...]
    title_en: str = ""
    date: dt.date | None = None
    intro: str = ""
    organisers: tuple[Organiser, ...] = ()
    contact: Contact = field(default_factory=Contact)
    disclaimer: str = ""
    slug_override: str | None = None

    @property
    def slug(self) -> str:
        return self.slug_override or f"{self.year}-{self.number:02d}"

    def items_in(self, section: str) -> tuple[Item, ...]:
        return tuple(item for item in self.items if item.section == section)
