"""Lines of a journal text export classified as tokens: headings, items, sources, plain text."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from newsletter.content.cjktext import compare_key


class Kind(enum.Enum):
    TEXT = "text"
    TOC_HEAD = "toc"  # 目录 CONTENTS
    # 动态 NEWS / 聚焦 FOCUS; `value` is news|focus, `text` what follows on the line.
    GROUP = "group"
    SECTION = "section"  # ■ 政策; `value` is the section code ("" for a name not in the journal)
    BULLET = "bullet"  # an item opener `- title`, `• title`; `value` "bold" for `**title**`
    SOURCE = "source"  # （来源：URL）; `text` is the URL, `value` "open" until the ） comes
    NUMBERED = "numbered"  # `1. text` or `一、text`; `value` is the marker (1. / 一、)
    REFS = "refs"  # 参考资料：
    PAGE_NUMBER = "page"  # page furniture: a lone page number
    RUNNING_HEAD = "head"  # the publication name (with the issue) repeated at the top of a page
    ISSUE_LINE = "issue"  # 2020年 第一期


@dataclass(frozen=True)
class Token:
    kind: Kind
    line: int  # 1-based line of the input
    text: str  # the payload, markers stripped
    gap: bool  # a blank line came before it
    value: str = ""
    last_line: int = 0  # where a token merged from several lines ends


SECTION_NAMES = {"政策": "policy", "科研": "research", "园区/企业": "parks", "园区企业": "parks"}
SECTION_NAMES |= {"园区": "parks", "企业": "parks", "需求": "demand"}
_SECTION = re.compile(r"^[■□◆◇▪▶►]\s*(?P<name>.+?)(?:(?:\s*[.…·．]{2,}\s*|\s+)(?P<page>\d{1,3}))?$")
_GROUP = re.compile(r"^(?P<zh>动\s*态|聚\s*焦)\s*(?:(?P<en>(?i:news|focus))\b\s*(?P<rest>.*)|$)")
_TOC_HEAD = re.compile(r"^目\s*录(?:\s*(?i:contents))?$")
_BULLET = re.compile(r"^(?:[-–*]\s+|[•·●▪◦]\s*)(?P<title>.+)$")
_BOLD = re.compile(r"^\*\*(?P<title>.+?)\*\*$")
_SOURCE = re.compile(r"^(?P<open>[（(])?\s*来\s*源\s*[：:]\s*(?P<url>.*?)\s*(?P<close>[）)])?$")
_INLINE_SOURCE = re.compile(
    r"^(?P<text>.*\S)\s*[（(]\s*来\s*源\s*[：:]\s*(?P<url>[^（()）]+?)\s*[）)]$"
)
_NUMBERED = re.compile(
    r"^(?:(?P<n>\d{1,2})\s*[.．](?!\d)|(?P<zh>[一二三四五六七八九十]{1,3})、)\s*(?P<text>\S.*)$"
)
_REFS = re.compile(r"^(参考资料|参考文献|资料来源)\s*[：:]?$")
_PAGE_NUMBER = re.compile(
    r"^(?:[-–—]\s*)?\d{1,3}(?:\s*[-–—])?$|^第\s*\d{1,3}\s*页$|^\d{1,3}\s*/\s*\d{1,3}$"
)
ISSUE_PATTERN = re.compile(
    r"(?P<year>\d{4})\s*年\s*第\s*(?P<number>[0-9一二三四五六七八九十百零〇两]+)\s*期"
)


def lex(lines: list[str], publication: str) -> list[Token]:
    """Tokens of the non-blank lines; `publication` (the masthead name) marks running heads."""
    tokens: list[Token] = []
    gap = False
    for number, raw in enumerate(lines, start=1):
        line = raw.replace("\f", " ").strip()
        if not line:
            gap = True
            continue
        if tokens and _continues(tokens[-1], gap):
            tokens[-1] = _extend(tokens[-1], line, number)
            continue
        tokens.extend(_classify(line, number, gap, publication))
        gap = False
    return tokens


def unbold(text: str) -> str:
    """A title without the `**` of bold type around it."""
    text = text.strip()
    match = _BOLD.match(text)
    return match["title"].strip() if match else text.strip("*").strip()


def _classify(line: str, number: int, gap: bool, publication: str) -> list[Token]:
    def token(kind: Kind, text: str, value: str = "") -> Token:
        return Token(kind, number, text, gap, value, number)

    if _PAGE_NUMBER.match(line):
        return [token(Kind.PAGE_NUMBER, line)]
    if _TOC_HEAD.match(line):
        return [token(Kind.TOC_HEAD, line)]
    if _is_running_head(line, publication):
        return [token(Kind.RUNNING_HEAD, line)]
    if ISSUE_PATTERN.fullmatch(line.replace(" ", "")):
        return [token(Kind.ISSUE_LINE, line)]
    if match := _GROUP.match(line):
        group = "news" if compare_key(match["zh"]) == "动态" else "focus"
        return [token(Kind.GROUP, (match["rest"] or "").strip(), group)]
    if (section := _section(line)) is not None:
        return [token(Kind.SECTION, line, section)]
    if match := _SOURCE.match(line):
        still_open = bool(match["open"]) and not match["close"]
        return [token(Kind.SOURCE, _url(match["url"]), "open" if still_open else "")]
    if match := _NUMBERED.match(line):
        marker = f"{match['n']}." if match["n"] else f"{match['zh']}、"
        return [token(Kind.NUMBERED, match["text"].strip(), marker)]
    if _REFS.match(line):
        return [token(Kind.REFS, line.rstrip("：:").strip() + "：")]
    if bullet := _bullet(line):
        return [token(Kind.BULLET, *bullet)]
    if match := _INLINE_SOURCE.match(line):
        source = Token(Kind.SOURCE, number, _url(match["url"]), False, "", number)
        return [token(Kind.TEXT, match["text"]), source]
    return [token(Kind.TEXT, line)]


def _bullet(line: str) -> tuple[str, str] | None:
    """(title, value) of an item opener; value `bold` for a bold line, `open` for unclosed bold."""
    if match := _BULLET.match(line):
        title = match["title"].strip()
        if title.startswith("**") and not title.endswith("**"):
            return title[2:].strip(), "open"
        return unbold(title), ""
    if match := _BOLD.match(line):
        return match["title"].strip(), "bold"
    if line.startswith("**") and "**" not in line[2:]:
        return line[2:].strip(), "open"
    return None


def _section(line: str) -> str | None:
    """The code of a section heading; an unknown name after ■ is still a heading (code "")."""
    match = _SECTION.match(line)
    if match is None:
        bare = re.sub(r"\s+|[A-Za-z&]+$", "", line)
        return SECTION_NAMES.get(bare)
    name = re.sub(r"\s+", "", match["name"])
    name = re.sub(r"[A-Za-z&]+$", "", name)  # an English name after the Chinese one
    return SECTION_NAMES.get(name, "")


def _is_running_head(line: str, publication: str) -> bool:
    if not publication:
        return False
    key = compare_key(line).strip("《》<>")
    if not key.startswith(compare_key(publication)):
        return False
    rest = key[len(compare_key(publication)) :]
    return not rest or bool(ISSUE_PATTERN.fullmatch(rest)) or rest.isascii()


def _url(raw: str) -> str:
    return raw.strip().strip("<>").strip()


def _continues(previous: Token, gap: bool) -> bool:
    """A source URL or a bold title the export wrapped onto the next line continues there."""
    return not gap and previous.kind in (Kind.SOURCE, Kind.BULLET) and previous.value == "open"


def _extend(previous: Token, line: str, number: int) -> Token:
    if previous.kind is Kind.SOURCE:
        closed = line.endswith(("）", ")"))
        url = previous.text + _url(line[:-1] if closed else line)
        value = "" if closed else "open"
        return Token(Kind.SOURCE, previous.line, url, previous.gap, value, number)
    closed = line.endswith("**")
    title = previous.text + (line[:-2].strip() if closed else line)
    value = "bold" if closed else "open"
    return Token(Kind.BULLET, previous.line, title, previous.gap, value, number)
