"""Render a combined digest: several owed issues in one mail, grouped by issue then section.

One issue owed renders as that issue's ordinary digest. Several fill the single digest's page
(`digest_combined.*.j2` extend `digest.*.j2`) issue by issue, within the same HTML_LIMIT: the
longest bodies are cut at a paragraph, each cut item linking to its issue's web version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import jinja2

from newsletter.content.model import Issue
from newsletter.render import markdown
from newsletter.render.combined import CombinedSelection, ItemKey
from newsletter.render.digest import (
    _SLACK,
    FONT_STACK,
    HTML_LIMIT,
    OUTLOOK_FONT,
    PREFERENCES_URL,
    PREHEADER_PAD,
    SUBJECT_SECTORS,
    UNSUBSCRIBE_URL,
    DigestLinks,
    RenderedDigest,
    _preheader,
    _tidy_text,
    language_marks,
    one_line,
    render_digest,
)
from newsletter.render.digest import GREETING as GREETING_TOKEN
from newsletter.render.environment import TemplateRenderError, compile_mjml, compress
from newsletter.render.environment import render_template as render
from newsletter.render.labels import Chrome, chrome_for
from newsletter.render.view import (
    GroupView,
    LinkView,
    disclaimer_text,
    group_items,
    left_out,
    reader_sectors,
    sector_name,
)
from newsletter.taxonomy import SectorDef

HTML_TEMPLATE = "digest_combined.mjml.j2"
TEXT_TEMPLATE = "digest_combined.txt.j2"


@dataclass(frozen=True)
class _Words:
    intro: str  # "{count}" items from "{issues}" issues
    intro_whole: str
    toc: str
    also: str
    list_separator: str


_WORDS = {
    "zh": _Words(
        intro="自您上次收到摘要以来共出版 {issues} 期，按您关注的领域为您选出 {count} 篇。",
        intro_whole="自您上次收到摘要以来共出版 {issues} 期，共 {count} 篇。",
        toc="目录",
        also="这几期的其他内容",
        list_separator="、",
    ),
    "en": _Words(
        intro="{count} items from the {issues} issues since your last digest, chosen for your "
        "sectors.",
        intro_whole="{count} items from the {issues} issues since your last digest.",
        toc="In this digest",
        also="Also in these issues",
        list_separator=", ",
    ),
}


def _runs(numbers: Sequence[int]) -> list[str]:
    """1, 2, 3, 5 -> ["1-3", "5"]: a range only where no number is missing."""
    out: list[str] = []
    ordered = sorted(set(numbers))
    start = prev = ordered[0]
    for n in [*ordered[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return out


def span_label(issues: Sequence[Issue], language: str) -> str:
    """ "2020年第1-2期" / "2020 Nos. 1-2"; "2020年第1、3期" / "2020 Nos. 1, 3" when one is missing."""
    words = _WORDS[chrome_for(language).language]
    years: dict[int, list[int]] = {}
    for issue in sorted(issues, key=lambda i: (i.year, i.number)):
        years.setdefault(issue.year, []).append(issue.number)
    labels = []
    for year, numbers in years.items():
        runs = words.list_separator.join(_runs(numbers))
        if language == "zh":
            labels.append(f"{year}年第{runs}期")
        else:
            plural = len(numbers) > 1
            labels.append(f"{year} No{'s' if plural else ''}. {runs}")
    return ("、" if language == "zh" else "; ").join(labels)


@dataclass(frozen=True)
class PartView:
    label: str
    date: str
    web: str
    groups: tuple[GroupView, ...]


@dataclass(frozen=True)
class AlsoView:
    label: str
    links: tuple[LinkView, ...]


def _anchored(groups: tuple[GroupView, ...], slug: str) -> tuple[GroupView, ...]:
    """Anchors named by issue too: an item id is unique only within its issue."""
    return tuple(
        replace(
            g,
            sections=tuple(
                replace(s, items=tuple(replace(i, id=f"{slug}-{i.id}") for i in s.items))
                for s in g.sections
            ),
        )
        for g in groups
    )


def _context(
    combined: CombinedSelection,
    chrome: Chrome,
    *,
    sectors: Mapping[str, SectorDef],
    links: DigestLinks,
    bodies: Mapping[ItemKey, str],
) -> dict[str, object]:
    words = _WORDS[chrome.language]
    newest = combined.parts[-1].issue
    parts, also = [], []
    for part in combined.parts:
        issue = part.issue
        web = links.archive(issue, chrome.language)
        mine = {i: b for (slug, i), b in bodies.items() if slug == issue.slug}
        groups = group_items(
            issue, set(part.carried), web=web, bodies=mine, sectors=sectors, chrome=chrome,
            connect=links.connect(issue),
        )  # fmt: skip
        label = chrome.issue_label(issue)
        parts.append(PartView(label, chrome.date_label(issue), web, _anchored(groups, issue.slug)))
        # What tailoring left out; what they already received is not listed again.
        missing = left_out(issue, set(part.selection.included), web=web)
        if missing:
            also.append(AlsoView(label, missing))
    count = len(combined.carried)
    matched = combined.matched_sectors
    interests = combined.parts[0].selection.interests
    mine_sectors = reader_sectors(interests, matched, sectors, chrome)
    whole = not also
    named = [] if whole else [sector_name(c, sectors, chrome) for c in matched][:SUBJECT_SECTORS]
    all_groups = tuple(g for p in parts for g in p.groups)
    intro = words.intro_whole if whole else words.intro
    return {
        "t": chrome,
        # The masthead and the footer (contact, disclaimer) are the newest issue's; its date
        # alone would misdate the span.
        "issue": replace(newest, date=None),
        "title": chrome.title(newest),
        "issue_label": span_label(combined.issues, chrome.language),
        "parts": parts,
        "groups": all_groups,
        "also": also,
        "also_heading": words.also,
        "toc_heading": words.toc,
        "intro_line": intro.format(issues=len(parts), count=count),
        "whole": whole,
        "count": count,
        "your_sectors": mine_sectors,
        "subject_sectors": named,
        "more_sectors": bool(named) and len(mine_sectors) > len(named),
        "web": links.archive(newest, chrome.language),
        "disclaimer": disclaimer_text(newest),
        "preheader": _preheader(all_groups),
        "font_stack": FONT_STACK,
        "outlook_font": OUTLOOK_FONT,
        "preheader_pad": PREHEADER_PAD,
        **language_marks(chrome.language),
        "greeting": GREETING_TOKEN,
        "unsubscribe_url": UNSUBSCRIBE_URL,
        "preferences_url": PREFERENCES_URL,
    }


def _shorten(
    combined: CombinedSelection, bodies: dict[ItemKey, str], excess: int
) -> dict[ItemKey, str]:
    """Cut the longest carried body, of any issue, at a paragraph by about `excess` bytes."""
    candidates = []
    latest = {part.issue.slug: n for n, part in enumerate(combined.parts)}
    for part in combined.parts:
        carried = set(part.carried)
        for item in part.issue.items:
            if item.id in carried:
                key = (part.issue.slug, item.id)
                body = bodies.get(key, item.body)
                candidates.append((len(body.encode()), key, body))
    for size, key, body in sorted(candidates, reverse=True):
        shorter = markdown.cut(body, size - excess - _SLACK)
        if shorter != body:
            return {**bodies, key: shorter}
    # Several issues can hold more first paragraphs than one mail: the latest issue's longest
    # items keep their title and the link to the web version, never a half paragraph.
    by_lateness = sorted(candidates, key=lambda c: (latest[c[1][0]], c[0]), reverse=True)
    for _, key, body in by_lateness:
        if body:
            return {**bodies, key: ""}
    raise TemplateRenderError(
        HTML_TEMPLATE,
        f"the combined digest stays over {HTML_LIMIT} bytes with every body left out",
    )


def render_combined(
    combined: CombinedSelection,
    *,
    language: str,
    sectors: Mapping[str, SectorDef],
    links: DigestLinks,
    env: jinja2.Environment,
) -> RenderedDigest:
    """The reader's one mail for everything owed; the same placeholders as `render_digest`.

    `cut_items` names cut bodies as "slug#item".
    """
    if combined.empty:
        raise ValueError("nothing is owed: a combined digest needs at least one issue")
    if combined.single:
        part = combined.parts[0]
        return render_digest(
            part.issue, part.carried_selection(), language=language, sectors=sectors,
            links=links, env=env,
        )  # fmt: skip
    chrome = chrome_for(language)
    bodies: dict[ItemKey, str] = {}
    while True:
        ctx = _context(combined, chrome, sectors=sectors, links=links, bodies=bodies)
        ctx["subject_line"] = subject = one_line(render(env, "digest.subject.j2", ctx))
        page = compile_mjml(
            compress(render(env, HTML_TEMPLATE, ctx)), template=HTML_TEMPLATE, env=env
        )
        size = len(page.encode())
        if size <= HTML_LIMIT:
            break
        bodies = _shorten(combined, bodies, size - HTML_LIMIT)
    return RenderedDigest(
        subject=subject,
        html=page,
        text=_tidy_text(render(env, TEXT_TEMPLATE, ctx)),
        preheader=str(ctx["preheader"]),
        language=language,
        cut_items=tuple(f"{slug}#{item}" for slug, item in bodies),
    )
