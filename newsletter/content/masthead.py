"""The masthead of a journal text: name, issue number, organisers, introduction, contact."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from newsletter.content.cjktext import chinese_number, tidy
from newsletter.content.model import NUMBERS, YEARS, Organiser
from newsletter.content.paragraphs import TEXT, ParagraphBuilder
from newsletter.content.textdecode import TextImportError
from newsletter.content.textlex import ISSUE_PATTERN, Kind, Token

_ORGANISER = re.compile(r"^(?P<role>[^：:]{1,6}单位|主办|承办|协办|合作)\s*[：:]\s*(?P<name>\S.*)$")
_PHONE = re.compile(
    r"(?:电\s*话|联系电话|Tel|TEL|Phone)\s*[：:]\s*(?P<phone>\+?[\d\- ()（）]{6,}\d)"
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CONTACT_LINE = re.compile(
    r"^(?:电\s*话|联系电话|Tel|TEL|Phone|E-?mail|EMAIL|邮箱|电子邮箱|邮件)\s*[：:]"
)
_DISCLAIMER = re.compile(r"^免\s*责\s*声\s*明")
# English names of journals whose PDF prints the English name as an image the text export loses.
KNOWN_TITLES_EN = {"中国科技创新速递": "China S&T Innovation Express"}
_DATE = re.compile(r"(?P<y>\d{4})\s*年\s*(?P<m>\d{1,2})\s*月\s*(?P<d>\d{1,2})\s*日")
_ENGLISH_NAME = re.compile(r"^[A-Za-z][A-Za-z&.,' -]+$")
_PUBLICATION = re.compile(r"^(?P<zh>[^A-Za-z0-9]+?)\s*(?P<en>[A-Za-z][A-Za-z&.,' -]*)?$")
# Page furniture on the first pages, and an issue line repeated as a running head.
_FURNITURE = (Kind.PAGE_NUMBER, Kind.RUNNING_HEAD, Kind.ISSUE_LINE)


class _NotADate(ValueError):
    pass


def _date(match: re.Match[str]) -> dt.date:
    try:
        return dt.date(int(match["y"]), int(match["m"]), int(match["d"]))
    except ValueError as exc:
        raise _NotADate(f"{match.group()!r} is not a date ({exc}); correct it") from None


def read_masthead(tokens: Sequence[Token], *, source: str) -> Masthead:
    """The masthead from the tokens before the table of contents; raises without name or number."""
    head = Masthead()
    head.read(tokens, source)
    return head


@dataclass
class Masthead:
    """What the first page says about the issue: name, number, organisers, contact, notes."""

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

    def read(self, tokens: Sequence[Token], source: str) -> None:
        in_disclaimer = page_break = False
        for index, token in enumerate(tokens):
            if index == 0 and self._name(token.text):
                continue
            try:
                structured = self._structured(token.text)
            except _NotADate as exc:
                raise TextImportError(source, str(exc), token.line) from None
            if structured:
                self.intro.close()
                in_disclaimer = page_break = False
            elif token.kind in _FURNITURE:
                page_break = True
            else:
                in_disclaimer = self._prose(token, in_disclaimer, gap=token.gap or page_break)
                page_break = False
        self._require(tokens, source)
        if not self.title_en:
            self.title_en = KNOWN_TITLES_EN.get(self.publication, "")

    def _name(self, text: str) -> bool:
        if ISSUE_PATTERN.search(text):
            # The name and the issue on one line: 中国科技创新速递 2020年第1期.
            return self._issue_line(text)
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
            or self._date_line(text)
        )

    def _issue_line(self, text: str) -> bool:
        match = ISSUE_PATTERN.search(text)
        if match is None or self.year:
            return False
        if not self.publication and match.start() > 0:
            self.publication = tidy(text[: match.start()])
        self.year, self.number = int(match["year"]), chinese_number(match["number"])
        if date := _DATE.search(text):
            self.date = _date(date)
        return True

    def _date_line(self, text: str) -> bool:
        """A line holding only the date of the issue, as 出版日期：2020年8月1日."""
        bare = re.sub(r"^(?:出版|发布)?日期\s*[：:]|出版$", "", text.strip()).strip()
        match = _DATE.fullmatch(bare)
        if match is None or self.date:
            return False
        self.date = _date(match)
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

    def _prose(self, token: Token, in_disclaimer: bool, *, gap: bool) -> bool:
        """Add a line to the introduction or the disclaimer; True while inside the disclaimer."""
        line, last = token.line, token.last_line
        if _DISCLAIMER.match(token.text):
            self.disclaimer.close()
            self.disclaimer.add(TEXT, token.text, line=line, last_line=last, gap=False)
            return True
        if in_disclaimer and not gap:
            self.disclaimer.add(TEXT, token.text, line=line, last_line=last, gap=False)
            return True
        self.intro.add(TEXT, token.text, line=line, last_line=last, gap=gap)
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
                "no issue number in the masthead: add a line like '2020年 第一期' under the name",
                first,
            )
        for value, bounds, what in ((self.year, YEARS, "year"), (self.number, NUMBERS, "number")):
            if value not in bounds:
                raise TextImportError(
                    source,
                    f"issue {what} {value} in the masthead must be from {bounds.start} to "
                    f"{bounds.stop - 1}; correct the line like '2020年 第一期'",
                    first,
                )
