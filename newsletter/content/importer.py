"""The journal's plain-text export (from the PDF) to an `Issue`, with warnings and review comments."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from newsletter.content.cjktext import chinese_number, tidy
from newsletter.content.issue_yaml import IssueComments, dump_issue
from newsletter.content.model import Contact, Issue, Item, Organiser
from newsletter.content.paragraphs import TEXT, ParagraphBuilder, render_body, render_paragraphs
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
from newsletter.content.textlex import ISSUE_PATTERN, Kind, Token, lex
from newsletter.taxonomy import SectorDef

__all__ = [
    "BinaryTextError",
    "Conversion",
    "EmptyTextError",
    "ImportWarning",
    "NotAnIssueError",
    "TextImportError",
    "UndecodableTextError",
    "convert",
    "decode_export",
    "parse_issue_text",
]

# Sections whose items cite a source; an item there without one is worth a look.
SOURCED_SECTIONS = ("policy", "demand")
_ORGANISER = re.compile(r"^(?P<role>[^：:]{1,6}单位|主办|承办|协办|合作)\s*[：:]\s*(?P<name>\S.*)$")
_PHONE = re.compile(r"(?:电\s*话|联系电话|Tel|TEL|Phone)\s*[：:]\s*(?P<phone>\+?[\d\- ()（）]{6,}\d)")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CONTACT_LINE = re.compile(r"^(?:电\s*话|联系电话|Tel|TEL|Phone|E-?mail|EMAIL|邮箱|电子邮箱|邮件)\s*[：:]")
_DISCLAIMER = re.compile(r"^免\s*责\s*声\s*明")
# English names of journals whose PDF prints the English name as an image the text export loses.
KNOWN_TITLES_EN = {"中国科技创新速递": "China S&T Innovation Express"}
_DATE = re.compile(r"(?P<y>\d{4})\s*年\s*(?P<m>\d{1,2})\s*月\s*(?P<d>\d{1,2})\s*日")
_ENGLISH_NAME = re.compile(r"^[A-Za-z][A-Za-z&.,' -]+$")
_PUBLICATION = re.compile(r"^(?P<zh>[^A-Za-z0-9]+?)\s*(?P<en>[A-Za-z][A-Za-z&.,' -]*)?$")


class NotAnIssueError(TextImportError):
    """The text holds none of the journal's sections."""


@dataclass(frozen=True)
class ImportWarning:
    """Something the importer guessed or found odd; `line` is a line of the input text."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class Conversion:
    """An imported issue, what to check in it, and the comments its YAML carries for review."""

    issue: Issue
    warnings: tuple[ImportWarning, ...]
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
    masthead = _Masthead.read(masthead_tokens, source)
    toc = parse_toc(toc_tokens)
    drafts = BodyParser(source, toc).parse(body_tokens)
    if not drafts:
        raise NotAnIssueError(source, "no items found under the 动态/聚焦 sections; check the export")
    loose = cross_check(drafts, toc)
    missing_sources(drafts, SOURCED_SECTIONS)
    return _assemble(masthead, toc, drafts, loose, source=source, taxonomy=taxonomy)


def _publication_guess(lines: Sequence[str]) -> str:
    first = next(line.strip() for line in lines if line.strip())
    match = _PUBLICATION.match(first)
    return tidy(match["zh"]) if match else ""


@dataclass
class _Masthead:
    publication: str = ""
    title_en: str = ""
    year: int = 0
    number: int = 0
    date: dt.date | None = None
    organisers: list[Organiser] = field(default_factory=list)
    phone: str = ""
    email: str = ""
    intro: ParagraphBuilder = field(default_factory=ParagraphBuilder)
    disclaimer: ParagraphBuilder = field(default_factory=ParagraphBuilder)

    @classmethod
    def read(cls, tokens: Sequence[Token], source: str) -> _Masthead:
        head = cls()
        in_disclaimer = False
        for index, token in enumerate(tokens):
            if index == 0 and head._name(token.text):
                continue
            if head._structured(token.text):
                head.intro.close()
                in_disclaimer = False
                continue
            in_disclaimer = head._prose(token, in_disclaimer)
        head._require(tokens, source)
        return head

    def _name(self, text: str) -> bool:
        if ISSUE_PATTERN.search(text):
            return self._issue_line(text)  # a name and issue on one line: 中国科技创新速递 2020年第1期
        match = _PUBLICATION.match(text)
        if match is None:
            return False
        self.publication, self.title_en = tidy(match["zh"]), (match["en"] or "").strip()
        return True

    def _english_name(self, text: str) -> bool:
        if self.title_en or self.intro.paragraphs or not _ENGLISH_NAME.match(text):
            return False
        self.title_en = text.strip()
        return True

    def _structured(self, text: str) -> bool:
        """A masthead line with a fixed meaning: issue number, organiser, contact, English name."""
        return (
            self._issue_line(text)
            or self._organiser(text)
            or self._contact(text)
            or self._english_name(text)
        )

    def _issue_line(self, text: str) -> bool:
        match = ISSUE_PATTERN.search(text)
        if match is None or self.year:
            return False
        if not self.publication and match.start() > 0:
            self.publication = tidy(text[: match.start()])
        self.year, self.number = int(match["year"]), chinese_number(match["number"])
        if date := _DATE.search(text):
            self.date = dt.date(int(date["y"]), int(date["m"]), int(date["d"]))
        return True

    def _organiser(self, text: str) -> bool:
        match = _ORGANISER.match(text)
        if match:
            self.organisers.append(Organiser(match["role"], tidy(match["name"])))
        return match is not None

    def _contact(self, text: str) -> bool:
        if not _CONTACT_LINE.match(text):
            return False
        if phone := _PHONE.search(text):
            self.phone = phone["phone"].strip()
        if email := _EMAIL.search(text):
            self.email = email.group()
        return True

    def _prose(self, token: Token, in_disclaimer: bool) -> bool:
        """Add a line to the introduction or the disclaimer; True while inside the disclaimer."""
        line, last = token.line, token.last_line
        if _DISCLAIMER.match(token.text):
            self.disclaimer.add(TEXT, token.text, line=line, last_line=last, gap=False)
            return True
        if in_disclaimer and not token.gap:
            self.disclaimer.add(TEXT, token.text, line=line, last_line=last, gap=False)
            return True
        self.intro.add(TEXT, token.text, line=line, last_line=last, gap=token.gap)
        return False

    def _require(self, tokens: Sequence[Token], source: str) -> None:
        first = tokens[0].line if tokens else 1
        if not self.publication:
            raise TextImportError(
                source, "no masthead: the first line should name the publication", first
            )
        if not self.year or self.number < 1:
            raise TextImportError(
                source,
                "no issue number in the masthead: add a line such as '2020年 第一期' under the name",
                first,
            )


def _assemble(
    head: _Masthead,
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
    warnings = [ImportWarning(line, message) for line, message in general]
    for draft in drafts:
        warnings.extend(ImportWarning(line, message) for line, message in _notes(draft))
    issue = Issue(
        publication=head.publication,
        title_en=head.title_en or KNOWN_TITLES_EN.get(head.publication, ""),
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
        "Review before importing: each sector and region comment names the words that suggested it;",
        "each 'check:' comment is a guess the importer made (joined page breaks, titles, sources).",
    ]
    if not dated:
        lines.append("The export gives no date: add `date: YYYY-MM-DD` below `number` if wanted.")
    return lines


def _ids(drafts: Sequence[ItemDraft]) -> list[tuple[ItemDraft, str]]:
    """`policy-1`, `policy-2`, ... per section in reading order; the focus article is `focus`."""
    counts: dict[str, int] = {}
    out: list[tuple[ItemDraft, str]] = []
    for draft in drafts:
        counts[draft.section] = counts.get(draft.section, 0) + 1
        n = counts[draft.section]
        out.append((draft, "focus" if draft.section == "focus" and n == 1 else f"{draft.section}-{n}"))
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
    sectors = suggest_sectors(text, taxonomy)
    regions = find_regions(text)
    comments.items[item_id] = [f"from line {draft.line} of the export"]
    comments.items[item_id] += [f"check: line {line}: {message}" for line, message in _notes(draft)]
    comments.sectors[item_id] = {s.code: s.note for s in sectors}
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
