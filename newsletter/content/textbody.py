"""The table of contents and the sections of a journal text, read into item drafts."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from newsletter.content.cjktext import compare_key, ends_sentence, join_pieces, tidy
from newsletter.content.paragraphs import (
    BULLET,
    HEADING,
    NUMBERED,
    REFS,
    TEXT,
    Join,
    ParagraphBuilder,
    render_paragraphs,
)
from newsletter.content.textdecode import TextImportError
from newsletter.content.textlex import Kind, Token, unbold

_TOC_ENTRY = re.compile(r"^(?P<title>.+?)(?:\s*[.…·•．]{2,}\s*|\s+)(?P<page>\d{1,3})$")
_TOC_TEXT = (Kind.TEXT, Kind.BULLET, Kind.NUMBERED)
_FURNITURE = {Kind.PAGE_NUMBER, Kind.RUNNING_HEAD, Kind.ISSUE_LINE, Kind.TOC_HEAD}
_SECTION_HELP = "use ■ 政策, ■ 科研, ■ 园区/企业 or ■ 需求"
# After a source the next item may lack its bullet; a short line ending no sentence is its title.
_TITLE_MAX = 60


@dataclass(frozen=True)
class TocEntry:
    section: str
    title: str
    line: int


@dataclass(frozen=True)
class Toc:
    entries: tuple[TocEntry, ...] = ()
    summary: str = ""  # the focus article's summary printed under its entry
    joins: tuple[Join, ...] = ()  # page breaks joined inside the summary


@dataclass
class ItemDraft:
    section: str
    title: str
    line: int
    body: ParagraphBuilder = field(default_factory=ParagraphBuilder)
    source: str | None = None
    notes: list[tuple[int, str]] = field(default_factory=list)


def split_regions(tokens: Sequence[Token]) -> tuple[list[Token], list[Token], list[Token]]:
    """(masthead, table of contents, body); the body starts where a heading comes a second time."""
    starts = [
        i for i, t in enumerate(tokens) if t.kind in (Kind.GROUP, Kind.SECTION, Kind.TOC_HEAD)
    ]
    first = starts[0]
    if tokens[first].kind is not Kind.TOC_HEAD:
        return list(tokens[:first]), [], list(tokens[first:])
    seen: set[tuple[Kind, str]] = set()
    for i in range(first + 1, len(tokens)):
        token = tokens[i]
        if token.kind in (Kind.GROUP, Kind.SECTION):
            if (token.kind, token.value) in seen:
                return list(tokens[:first]), list(tokens[first + 1 : i]), list(tokens[i:])
            seen.add((token.kind, token.value))
    return list(tokens[:first]), list(tokens[first + 1 :]), []


def parse_toc(tokens: Sequence[Token]) -> Toc:
    """Entries (section, title) of the table of contents, and the focus summary under it."""
    texts = [t for t in tokens if t.kind in _TOC_TEXT]
    reader = _TocReader(has_pages=any(_TOC_ENTRY.match(t.text) for t in texts))
    for token in tokens:
        reader.feed(token)
    return reader.finish()


class _TocReader:
    def __init__(self, *, has_pages: bool) -> None:
        self.has_pages = has_pages
        self.entries: list[TocEntry] = []
        self.summary = ParagraphBuilder()
        self.section = ""
        self.pending: tuple[str, int] | None = None  # a title wrapped before its page number

    def feed(self, token: Token) -> None:
        if token.kind is Kind.GROUP:
            self._flush()
            self.section = "focus" if token.value == "focus" else ""
            if token.text:
                self.entries.append(TocEntry("focus", _strip_page(unbold(token.text)), token.line))
        elif token.kind is Kind.SECTION:
            self._flush()
            self.section = token.value
        elif token.kind in _TOC_TEXT and self.section:
            self._text(token)

    def finish(self) -> Toc:
        self._flush()
        summary = render_paragraphs(self.summary.paragraphs)
        return Toc(tuple(self.entries), summary, tuple(self.summary.joins))

    def _text(self, token: Token) -> None:
        if self.section == "focus" and any(e.section == "focus" for e in self.entries):
            self.summary.add(
                TEXT, token.text, line=token.line, last_line=token.last_line, gap=token.gap
            )
            return
        text, line = token.text, token.line
        if self.pending is not None and not token.gap:
            text, line = join_pieces(self.pending[0], text), self.pending[1]
            self.pending = None
        self._flush()
        if _TOC_ENTRY.match(text) or not self.has_pages or self.section == "focus":
            self.entries.append(TocEntry(self.section, _strip_page(unbold(text)), line))
        else:
            self.pending = (text, line)

    def _flush(self) -> None:
        if self.pending is not None:
            self.entries.append(
                TocEntry(self.section, _strip_page(self.pending[0]), self.pending[1])
            )
            self.pending = None


def _strip_page(text: str) -> str:
    match = _TOC_ENTRY.match(text)
    return tidy(match["title"] if match else text)


class BodyParser:
    """Feeds the body tokens through a small state machine: group, section, current item."""

    def __init__(self, source: str, toc: Toc) -> None:
        self.source = source
        self.toc_keys = {compare_key(e.title) for e in toc.entries}
        self.drafts: list[ItemDraft] = []
        self.section = ""
        self.current: ItemDraft | None = None
        self.pending_gap = False
        self.awaiting_title = False

    def parse(self, tokens: Sequence[Token]) -> list[ItemDraft]:
        for token in tokens:
            gap = token.gap or self.pending_gap
            self.pending_gap = False
            if token.kind in _FURNITURE:
                # Page furniture marks a page break: a paragraph may go on across it.
                self.pending_gap = True
            elif token.kind is Kind.GROUP:
                self._group(token)
            elif token.kind is Kind.SECTION:
                self._section(token)
            elif token.kind is Kind.SOURCE:
                self._source(token)
            else:
                self._content(token, gap)
        self._close()
        return self.drafts

    def _group(self, token: Token) -> None:
        self._close()
        self.section = "focus" if token.value == "focus" else ""
        self.awaiting_title = token.value == "focus"
        if token.value == "focus" and token.text:
            self._open(unbold(token.text), token.line)

    def _section(self, token: Token) -> None:
        if not token.value:
            raise TextImportError(
                self.source, f"unknown section heading; {_SECTION_HELP}", token.line
            )
        self._close()
        self.section = token.value
        self.awaiting_title = False

    def _source(self, token: Token) -> None:
        if self.current is None:
            raise TextImportError(
                self.source, "a source (来源) before any item; put it under its item", token.line
            )
        if self.current.source is None:
            self.current.source = token.text
        else:
            note = f"a second source {token.text} is left out; the item keeps {self.current.source}"
            self.current.notes.append((token.line, note))

    def _content(self, token: Token, gap: bool) -> None:
        if self._opens_item(token, gap):
            self._close()
            self._open(token.text, token.line)
            return
        if self.current is None:
            raise TextImportError(
                self.source,
                f"text before any item heading; start the section with ■ and the item with •, "
                f"- or **title** ({_SECTION_HELP})",
                token.line,
            )
        if self._continues_title(token, gap):
            self.current.title = join_pieces(self.current.title, token.text)
            return
        kind = {Kind.NUMBERED: NUMBERED, Kind.REFS: REFS, Kind.BULLET: BULLET}.get(token.kind, TEXT)
        if token.kind is Kind.BULLET and token.value == "bold":
            kind = HEADING  # inside an article a bold line is a sub-heading, not a new item
        self.current.body.add(
            kind,
            token.text,
            line=token.line,
            last_line=token.last_line,
            gap=gap,
            marker=token.value,
        )

    def _opens_item(self, token: Token, gap: bool) -> bool:
        if self.section == "focus":
            return self.awaiting_title and token.kind in (Kind.TEXT, Kind.BULLET)
        if token.kind is Kind.BULLET:
            return self._require_section(token)
        if token.kind not in (Kind.TEXT, Kind.NUMBERED) or not self.section:
            return False
        if compare_key(token.text) in self.toc_keys:
            return True  # a title the export lost its bullet from, as the contents list it
        if self.current is None:
            return token.kind is Kind.TEXT
        # An item whose bullet the export lost: a short unfinished line after the previous source.
        return (
            self.current.source is not None
            and gap
            and len(token.text) <= _TITLE_MAX
            and not ends_sentence(token.text)
        )

    def _require_section(self, token: Token) -> bool:
        if not self.section:
            raise TextImportError(
                self.source, f"an item before any section heading; {_SECTION_HELP}", token.line
            )
        return True

    def _continues_title(self, token: Token, gap: bool) -> bool:
        """A title the layout wrapped: the table of contents shows the longer title."""
        draft = self.current
        if draft is None or gap or draft.body.paragraphs or token.kind is not Kind.TEXT:
            return False
        if compare_key(draft.title) in self.toc_keys:
            return False
        longer = compare_key(join_pieces(draft.title, token.text))
        return any(key.startswith(longer) for key in self.toc_keys)

    def _open(self, title: str, line: int) -> None:
        self.current = ItemDraft(self.section, title, line)
        self.awaiting_title = False

    def _close(self) -> None:
        draft, self.current = self.current, None
        if draft is None:
            return
        if not draft.body.paragraphs:
            raise TextImportError(
                self.source,
                f"item {tidy(draft.title)!r} has no text; add its paragraphs or remove its title",
                draft.line,
            )
        self.drafts.append(draft)


def cross_check(drafts: Sequence[ItemDraft], toc: Toc) -> list[tuple[int, str]]:
    """Warnings where items and the table of contents disagree; item notes are added in place."""
    if not toc.entries:
        return []
    loose: list[tuple[int, str]] = []
    for section in dict.fromkeys(e.section for e in toc.entries):
        listed = [e for e in toc.entries if e.section == section]
        items = [d for d in drafts if d.section == section]
        loose.extend(_check_section(section, listed, items))
    return loose


def _check_section(
    section: str, listed: Sequence[TocEntry], items: Sequence[ItemDraft]
) -> list[tuple[int, str]]:
    listed_keys = {compare_key(e.title) for e in listed}
    item_keys = {compare_key(tidy(d.title)) for d in items}
    for index, draft in enumerate(items):
        if compare_key(tidy(draft.title)) in listed_keys:
            continue
        hint = ""
        if index < len(listed):
            hint = (
                f"; the table of contents (line {listed[index].line}) has {listed[index].title!r}"
            )
        draft.notes.append((draft.line, f"title differs from the table of contents{hint}"))
    return [
        (e.line, f"the table of contents lists {e.title!r} ({section}) but no item has this title")
        for e in listed
        if compare_key(e.title) not in item_keys
    ]


def missing_sources(drafts: Sequence[ItemDraft], sections: Collection[str]) -> None:
    """Note items without a source in sections whose items usually cite one."""
    for draft in drafts:
        if draft.source is None and draft.section in sections:
            draft.notes.append(
                (draft.line, f"no source (来源) found; {draft.section} items usually cite one")
            )
