"""The chrome (headings, footer, greeting) in each reader language; the content stays Chinese."""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.content.model import Issue, Section
from newsletter.errors import NewsletterError


class UnknownLanguageError(NewsletterError, ValueError):
    def __init__(self, language: str) -> None:
        self.language = language
        super().__init__(f"language {language!r} is not supported; use one of {', '.join(CHROME)}")


_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


@dataclass(frozen=True)
class Chrome:
    language: str
    greeting_named: str  # "{name}" is replaced by the recipient's name
    greeting_anonymous: str
    toc: str
    selected: str  # "{count}" of "{total}" items
    whole: str
    your_sectors: str
    matched_mark: str  # after each sector of the reader's that this issue has items for
    matched_note: str  # explains the mark
    none_matched: str  # none of the reader's sectors has items in this issue
    also: str
    also_note: str
    source: str
    read_more: str
    contact: str
    phone: str
    email: str
    disclaimer: str
    unsubscribe: str
    preferences: str
    web_version: str
    why: str  # "{publication}"
    sector_separator: str
    more_sectors: str
    colon: str
    subject_separator: str

    def issue_label(self, issue: Issue) -> str:
        if self.language == "zh":
            return f"{issue.year}年第{issue.number}期"
        return f"{issue.year} No. {issue.number}"

    def date_label(self, issue: Issue) -> str:
        if issue.date is None:
            return ""
        d = issue.date
        if self.language == "zh":
            return f"{d.year}年{d.month}月{d.day}日"
        return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"

    def title(self, issue: Issue) -> str:
        return issue.publication if self.language == "zh" else issue.title_en or issue.publication

    def group_heading(self, section: Section) -> str:
        if self.language == "zh":
            return f"{section.group_zh} {section.group_en}"
        return f"{section.group_en} {section.group_zh}"

    def section_heading(self, section: Section) -> str:
        if section.zh == section.group_zh:  # 聚焦 FOCUS is a group of one section
            return self.group_heading(section)
        if self.language == "zh":
            return f"{section.zh} {section.en}"
        return f"{section.en} {section.zh}"


CHROME: dict[str, Chrome] = {
    "zh": Chrome(
        language="zh",
        greeting_named="尊敬的{name}：",
        greeting_anonymous="您好：",
        toc="本期目录",
        selected="本期共 {total} 篇，按您关注的领域为您选出 {count} 篇。",
        whole="本期共 {total} 篇。",
        your_sectors="关注领域",
        matched_mark="✓",
        matched_note="（✓ 本期有相关内容）",
        none_matched="（本期没有这些领域的内容）",
        also="本期其他内容",
        also_note="以下内容不在您关注的领域，可在网页版阅读：",
        source="来源",
        read_more="阅读全文",
        contact="联系我们",
        phone="电话",
        email="邮箱",
        disclaimer="免责声明",
        unsubscribe="退订",
        preferences="修改关注领域",
        web_version="网页版",
        why="您收到本邮件，是因为您订阅了《{publication}》。",
        sector_separator="、",
        more_sectors="等",
        colon="：",
        subject_separator="｜",
    ),
    "en": Chrome(
        language="en",
        greeting_named="Dear {name},",
        greeting_anonymous="Hello,",
        toc="In this issue",
        selected="{count} of the {total} items in this issue, chosen for your sectors.",
        whole="{total} items in this issue.",
        your_sectors="Your sectors",
        matched_mark=" ✓",
        matched_note=" (✓ in this issue)",
        none_matched=" (none in this issue)",
        also="Also in this issue",
        also_note="Outside your sectors; read them in the web version:",
        source="Source",
        read_more="Read more",
        contact="Contact",
        phone="Phone",
        email="Email",
        disclaimer="Disclaimer",
        unsubscribe="Unsubscribe",
        preferences="Change your sectors",
        web_version="Web version",
        why="You receive this because you subscribed to {publication}.",
        sector_separator=", ",
        more_sectors=" and more",
        colon=": ",
        subject_separator=" | ",
    ),
}


def chrome_for(language: str) -> Chrome:
    try:
        return CHROME[language]
    except KeyError:
        raise UnknownLanguageError(language) from None
