"""Render a digest once per profile (subject, HTML, text); fill in each recipient cheaply."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import jinja2
from markupsafe import Markup

from newsletter.content.model import Issue
from newsletter.render import markdown, textwrap_cjk
from newsletter.render.environment import (
    TemplateRenderError,
    compile_mjml,
    compress,
    render_template,
)
from newsletter.render.labels import Chrome, chrome_for
from newsletter.render.view import (
    GroupView,
    archive_url,
    disclaimer_text,
    group_items,
    left_out,
    reader_sectors,
    sector_name,
)
from newsletter.tailor import Selection
from newsletter.taxonomy import SectorDef

HTML_LIMIT = 102_000  # bytes of HTML past which Gmail clips a message
SUBJECT_SECTORS = 3
PREHEADER_CHARS = 110
FONT_STACK = (
    "PingFang SC, Hiragino Sans GB, Microsoft YaHei, Noto Sans CJK SC, "
    "Source Han Sans SC, Helvetica Neue, Arial, sans-serif"
)
# Outlook for Windows renders with Word, which ignores the stack and falls back to Times New
# Roman (and SimSun for Chinese) unless an mso-only rule names one font it has.
OUTLOOK_FONT = "Microsoft YaHei"
# Zero-width characters and no-break spaces after the preheader fill the inbox snippet, so the
# masthead and the greeting do not follow the preheader into it.
PREHEADER_PAD = "\u034f\u200c\u00a0" * 90
TEXT_WIDTH = 72  # display columns of the text part; CJK characters count two

# Fixed ASCII tokens: Jinja autoescape and MJML both pass them through unchanged.
GREETING = "%%GREETING%%"
RECIPIENT_NAME = "%%RECIPIENT_NAME%%"
UNSUBSCRIBE_URL = "%%UNSUBSCRIBE_URL%%"
PREFERENCES_URL = "%%PREFERENCES_URL%%"
# The reader's archive token (mail.links.read_token) inside web links: as long as the token, so
# the text part wraps a link holding it as it will be once spliced in.
READ_TOKEN = "%%READ_TOKEN" + "_" * 59 + "%%"
# The reader's "connect me" token (mail.links.connect_token) in every demand item's link: the
# same length as theirs, for the same reason.
CONNECT_TOKEN = "%%CONNECT_TOKEN" + "_" * 56 + "%%"
PLACEHOLDERS = (
    GREETING, RECIPIENT_NAME, UNSUBSCRIBE_URL, PREFERENCES_URL, READ_TOKEN, CONNECT_TOKEN
)  # fmt: skip
_TOKEN = re.compile(r"[A-Za-z0-9_.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_PERCENTS = re.compile(r"%{2,}")
_SAFE_URL = re.compile(r"^(https?://|mailto:)", re.IGNORECASE)
_SLACK = 2_000  # bytes cut beyond the measured excess, so one more render usually suffices


@dataclass(frozen=True)
class DigestLinks:
    base_url: str  # e.g. "https://newsletter.example.org"
    read_token: bool = False  # a subscribers-only archive: each link carries the reader's token

    def archive(self, issue: Issue, language: str = "zh") -> str:
        url = archive_url(self.base_url, issue.slug, language)
        return f"{url}{'&' if '?' in url else '?'}r={READ_TOKEN}" if self.read_token else url

    def connect(self, issue: Issue) -> Callable[[str], str]:
        """An item's "connect me" link, the reader's token still a placeholder."""
        base = f"{self.base_url.rstrip('/')}/connect/{issue.slug}"
        return lambda item_id: f"{base}/{item_id}/{CONNECT_TOKEN}"


@dataclass(frozen=True)
class RenderedDigest:
    """A profile's digest; `html` and `text` hold the PLACEHOLDERS until `personalise`.

    `text` is the text part as it goes on the wire: CRLF line ends, wrapped at TEXT_WIDTH columns.
    """

    subject: str
    html: str
    text: str
    preheader: str
    language: str = "zh"
    cut_items: tuple[str, ...] = ()  # items whose bodies were shortened to fit HTML_LIMIT


@dataclass(frozen=True)
class Recipient:
    name: str
    unsubscribe_url: str
    preferences_url: str
    read_token: str = ""
    connect_token: str = ""


def one_line(text: str) -> str:
    """Whitespace and control characters collapsed: safe for a header and for a preheader."""
    return " ".join(_CONTROL.sub(" ", text).split())


def language_marks(language: str) -> dict[str, object]:
    """The document's `lang`, and the attribute for text in the other language: the items stay
    Chinese in an English digest, so screen readers and fonts must be told where they are."""
    if language == "zh":
        return {"html_lang": "zh-CN", "zh_lang": Markup(""), "en_lang": Markup(' lang="en"')}
    return {"html_lang": language, "zh_lang": Markup(' lang="zh-CN"'), "en_lang": Markup("")}


def _preheader(groups: tuple[GroupView, ...]) -> str:
    """Whole titles, the focus piece first (it is the issue's feature), as many as fit."""
    items = [item for group in groups for section in group.sections for item in section.items]
    focus = [i for g in groups for s in g.sections if s.code == "focus" for i in s.items]
    titles = [one_line(i.title) for i in focus + [i for i in items if i not in focus]]
    text = ""
    for title in titles:
        joined = f"{text}；{title}" if text else title
        if len(joined) > PREHEADER_CHARS:
            break
        text = joined
    if not text and titles:
        text = titles[0][: PREHEADER_CHARS - 1] + "…"
    return text


def _context(
    issue: Issue,
    selection: Selection,
    chrome: Chrome,
    *,
    sectors: Mapping[str, SectorDef],
    links: DigestLinks,
    bodies: Mapping[str, str],
) -> dict[str, object]:
    web = links.archive(issue, chrome.language)
    included = set(selection.included)
    groups = group_items(
        issue, included, web=web, bodies=bodies, sectors=sectors, chrome=chrome,
        connect=links.connect(issue),
    )  # fmt: skip
    names = [sector_name(code, sectors, chrome) for code in selection.matched_sectors]
    whole = included >= {item.id for item in issue.items}
    mine = reader_sectors(selection.interests, selection.matched_sectors, sectors, chrome)
    marked = sum(m.matched for m in mine)
    named = [] if whole else names[:SUBJECT_SECTORS]
    return {
        "t": chrome,
        "issue": issue,
        "title": chrome.title(issue),
        "issue_label": chrome.issue_label(issue),
        "groups": groups,
        "also": left_out(issue, included, web=web),
        "whole": whole,
        "count": sum(len(s.items) for g in groups for s in g.sections),
        "total": len(issue.items),
        # All of the reader's sectors; marks only when some (not all) have items this time.
        "your_sectors": mine,
        "mark_matched": 0 < marked < len(mine),
        "none_matched": bool(mine) and not marked,
        # The subject names what this issue brings them, "and more" when they have more.
        "subject_sectors": named,
        "more_sectors": bool(named) and len(mine) > len(named),
        "web": web,
        "disclaimer": disclaimer_text(issue),
        "preheader": _preheader(groups),
        "font_stack": FONT_STACK,
        "outlook_font": OUTLOOK_FONT,
        "preheader_pad": PREHEADER_PAD,
        **language_marks(chrome.language),
        "greeting": GREETING,
        "unsubscribe_url": UNSUBSCRIBE_URL,
        "preferences_url": PREFERENCES_URL,
    }


def _render_html(env: jinja2.Environment, context: Mapping[str, object]) -> str:
    mjml = compress(render_template(env, "digest.mjml.j2", context))
    return compile_mjml(mjml, template="digest.mjml.j2", env=env)


def _shorten(
    issue: Issue, included: set[str], bodies: dict[str, str], excess: int
) -> dict[str, str]:
    """Cut the longest remaining body (at a paragraph) by about `excess` bytes."""
    candidates = [
        (len(bodies.get(i.id, i.body).encode()), i.id, bodies.get(i.id, i.body))
        for i in issue.items
        if i.id in included
    ]
    for size, item_id, body in sorted(candidates, reverse=True):
        shorter = markdown.cut(body, size - excess - _SLACK)
        if shorter != body:
            return {**bodies, item_id: shorter}
    raise TemplateRenderError(
        "digest.mjml.j2",
        f"the digest stays over {HTML_LIMIT} bytes with every body cut to one paragraph",
    )


def render_digest(
    issue: Issue,
    selection: Selection,
    *,
    language: str,
    sectors: Mapping[str, SectorDef],
    links: DigestLinks,
    env: jinja2.Environment,
) -> RenderedDigest:
    """One MJML compile per profile (more only when bodies must be cut to fit HTML_LIMIT)."""
    chrome = chrome_for(language)
    bodies: dict[str, str] = {}
    included = set(selection.included)
    while True:
        ctx = _context(issue, selection, chrome, sectors=sectors, links=links, bodies=bodies)
        ctx["subject_line"] = subject = one_line(render_template(env, "digest.subject.j2", ctx))
        page = _render_html(env, ctx)
        size = len(page.encode())
        if size <= HTML_LIMIT:
            break
        bodies = _shorten(issue, included, bodies, size - HTML_LIMIT)
    return RenderedDigest(
        subject=subject,
        html=page,
        text=_tidy_text(render_template(env, "digest.txt.j2", ctx)),
        preheader=str(ctx["preheader"]),
        language=language,
        cut_items=tuple(bodies),
    )


# The placeholders are never split; the signed links are always longer than a line, so measured
# so each gets a line of its own rather than following its label past the width once spliced in.
_TEXT = textwrap_cjk.Wrapper(
    TEXT_WIDTH,
    atoms={
        **{token: len(token) for token in PLACEHOLDERS},
        UNSUBSCRIBE_URL: TEXT_WIDTH,
        PREFERENCES_URL: TEXT_WIDTH,
    },
)


def _tidy_text(text: str) -> str:
    """Blank-line runs closed up, wrapped for reading, CRLF as RFC 5322 wants on the wire."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    tidy = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return _TEXT.text(tidy).replace("\n", "\r\n") + "\r\n"


def _greeting(name: str, language: str) -> str:
    chrome = chrome_for(language)
    return chrome.greeting_named.format(name=name) if name else chrome.greeting_anonymous


def _checked_url(url: str) -> str:
    # Signed links are built by our code; a different scheme (javascript:) means a bug upstream.
    if not _SAFE_URL.match(url) or "%%" in url:
        raise ValueError(f"recipient link {url[:40]!r} must be an http(s) or mailto URL")
    return url


PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))


def recipient_values(recipient: Recipient, language: str) -> tuple[dict[str, str], dict[str, str]]:
    """What each placeholder becomes for one recipient: (for the text part, for the HTML part)."""
    # A name cannot spell a placeholder ("%%" never occurs in a real name), so no output of
    # personalise ever holds one; later checks for leftover tokens can trust that.
    name = _PERCENTS.sub("%", one_line(recipient.name))
    values = {
        GREETING: _greeting(name, language),
        RECIPIENT_NAME: name,
        UNSUBSCRIBE_URL: _checked_url(one_line(recipient.unsubscribe_url)),
        PREFERENCES_URL: _checked_url(one_line(recipient.preferences_url)),
        READ_TOKEN: recipient.read_token if _TOKEN.fullmatch(recipient.read_token) else "",
        CONNECT_TOKEN: (
            recipient.connect_token if _TOKEN.fullmatch(recipient.connect_token) else ""
        ),
    }
    return values, {token: html.escape(value) for token, value in values.items()}


def personalise(digest: RenderedDigest, recipient: Recipient) -> RenderedDigest:
    """Fill the placeholders for one recipient: string replacement only, no rendering.

    One regex pass rather than successive str.replace calls, so a value that itself looks like a
    placeholder (a name such as "%%UNSUBSCRIBE_URL%%") is never expanded a second time.
    """
    values, escaped = recipient_values(recipient, digest.language)
    return replace(
        digest,
        html=PLACEHOLDER_RE.sub(lambda m: escaped[m.group(0)], digest.html),
        text=PLACEHOLDER_RE.sub(lambda m: values[m.group(0)], digest.text),
    )
