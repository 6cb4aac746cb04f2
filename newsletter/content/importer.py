"""The journal's plain-text export (from the PDF) to an `Issue`, with warnings and review notes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from newsletter.content.cjktext import tidy
from newsletter.content.issue_yaml import IssueComments, dump_issue
from newsletter.content.masthead import Masthead, read_masthead
from newsletter.content.model import Contact, Issue, Item
from newsletter.content.paragraphs import render_body, render_paragraphs
from newsletter.content.tagging import find_regions, suggest_sectors
from newsletter.content.textbody import (
    BodyParser,
    ItemDraft,
    Toc,
    cross_check,
    missing_sources,
    parse_toc,
    split_regions,
)
from newsletter.content.textdecode import (
    BinaryTextError,
    EmptyTextError,
    TextImportError,
    UndecodableTextError,
    decode_export,
    normalise_newlines,
)
from newsletter.content.textlex import Kind, lex
from newsletter.taxonomy import SectorDef

__all__ = [
    "BinaryTextError",
    "Conversion",
    "EmptyTextError",
    "ConversionWarning",
    "NotAnIssueError",
    "TextImportError",
    "UndecodableTextError",
    "convert",
    "decode_export",
    "parse_issue_text",
]

# Sections whose items cite a source; an item there without one is worth a look.
SOURCED_SECTIONS = ("policy", "demand")
_FIRST_NAME = re.compile(r"^[^A-Za-z0-9]+")


class NotAnIssueError(TextImportError):
    """The text holds none of the journal's sections."""


@dataclass(frozen=True)
class ConversionWarning:
    """Something the importer guessed or found odd; `line` is a line of the input text."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class Conversion:
    """An imported issue, what to check in it, and the comments its YAML carries for review."""

    issue: Issue
    warnings: tuple[ConversionWarning, ...]
    comments: IssueComments

    @property
    def yaml(self) -> str:
        return dump_issue(self.issue, self.comments)


def convert(data: bytes, *, source: str, taxonomy: Sequence[SectorDef]) -> Conversion:
    """Decode an export (UTF-8, UTF-16, GB18030) and convert it; see `parse_issue_text`."""
    return parse_issue_text(decode_export(data, source=source), source=source, taxonomy=taxonomy)


def parse_issue_text(text: str, *, source: str, taxonomy: Sequence[SectorDef]) -> Conversion:
    """Convert the text of one issue; raises a `TextImportError` naming the line to fix."""
    lines = normalise_newlines(text).split("\n")
    if not any(line.strip() for line in lines):
        raise EmptyTextError(source, "the text is empty; export the issue from the PDF again")
    tokens = lex(lines, _publication_guess(lines))
    if not any(t.kind in (Kind.GROUP, Kind.SECTION) for t in tokens):
        raise NotAnIssueError(
            source,
            "not an issue of the journal: no 动态/聚焦 sections found; "
            "check that this is the text export of an issue",
        )
    masthead_tokens, toc_tokens, body_tokens = split_regions(tokens)
    masthead = read_masthead(masthead_tokens, source=source)
    toc = parse_toc(toc_tokens)
    drafts = BodyParser(source, toc).parse(body_tokens)
    if not drafts:
        raise NotAnIssueError(
            source, "no items found under the 动态/聚焦 sections; check the export"
        )
    loose = cross_check(drafts, toc)
    missing_sources(drafts, SOURCED_SECTIONS)
    return _assemble(masthead, toc, drafts, loose, source=source, taxonomy=taxonomy)


def _publication_guess(lines: Sequence[str]) -> str:
    """The name on the first line, which page headers repeat; cut before any Latin or digit."""
    first = next(line.strip() for line in lines if line.strip())
    match = _FIRST_NAME.match(first)
    return tidy(match.group()) if match else ""


def _assemble(
    head: Masthead,
    toc: Toc,
    drafts: Sequence[ItemDraft],
    loose: Sequence[tuple[int, str]],
    *,
    source: str,
    taxonomy: Sequence[SectorDef],
) -> Conversion:
    joins = (*head.intro.joins, *head.disclaimer.joins, *toc.joins)
    general = sorted([*loose, *((j.line, j.message) for j in joins)])
    header = _header(source, dated=head.date is not None)
    comments = IssueComments(header=header + [f"check: line {n}: {m}" for n, m in general])
    items = [_item(draft, item_id, toc, taxonomy, comments) for draft, item_id in _ids(drafts)]
    warnings = [ConversionWarning(line, message) for line, message in general]
    for draft in drafts:
        warnings.extend(ConversionWarning(line, message) for line, message in _notes(draft))
    issue = Issue(
        publication=head.publication,
        title_en=head.title_en,
        year=head.year,
        number=head.number,
        date=head.date,
        items=tuple(items),
        intro=render_paragraphs(head.intro.paragraphs),
        organisers=tuple(head.organisers),
        contact=Contact(phone=head.phone, email=head.email),
        disclaimer=render_paragraphs(head.disclaimer.paragraphs),
    )
    return Conversion(issue, tuple(sorted(warnings, key=lambda w: w.line)), comments)


def _header(source: str, *, dated: bool) -> list[str]:
    lines = [
        f"Converted from {source} by `newsletter issue convert`.",
        "Review before importing: each sector and region comment names the words behind it;",
        "each 'check:' comment is a guess the importer made (page breaks, titles, sources).",
    ]
    if not dated:
        lines.append("The export gives no date: add `date: YYYY-MM-DD` below `number` if wanted.")
    return lines


def _ids(drafts: Sequence[ItemDraft]) -> list[tuple[ItemDraft, str]]:
    """`policy-1`, `policy-2`, ... per section in reading order; the focus article is `focus`.

    Numbers, not slugs of the title: a Chinese title gives no ASCII slug without a transliteration
    table, and staff may rename ids in the YAML before importing.
    """
    counts: dict[str, int] = {}
    out: list[tuple[ItemDraft, str]] = []
    for draft in drafts:
        n = counts[draft.section] = counts.get(draft.section, 0) + 1
        item_id = f"{draft.section}-{n}"
        out.append((draft, "focus" if item_id == "focus-1" else item_id))
    return out


def _notes(draft: ItemDraft) -> list[tuple[int, str]]:
    joins = [(j.line, j.message) for j in draft.body.joins]
    return sorted(draft.notes + joins)


def _item(
    draft: ItemDraft, item_id: str, toc: Toc, taxonomy: Sequence[SectorDef], comments: IssueComments
) -> Item:
    focus = draft.section == "focus"
    title = tidy(draft.title)
    body = render_body(draft.body.paragraphs, article=focus)
    summary = toc.summary if focus and item_id == "focus" else ""
    text = "\n".join((title, summary, body))
    suggested = suggest_sectors(text, taxonomy)
    sectors = suggested.tags
    regions = find_regions(text)
    comments.items[item_id] = [f"from line {draft.line} of the export"]
    comments.items[item_id] += [f"check: line {line}: {message}" for line, message in _notes(draft)]
    comments.sectors[item_id] = {s.code: s.note for s in sectors}
    comments.candidates[item_id] = {s.code: s.note for s in suggested.candidates}
    comments.regions[item_id] = {r.code: r.note for r in regions}
    return Item(
        id=item_id,
        section=draft.section,
        title=title,
        body=body,
        source=draft.source,
        sectors=tuple(s.code for s in sectors),
        regions=tuple(r.code for r in regions),
        always=focus,
        summary=summary,
    )
