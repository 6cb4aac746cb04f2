"""The web version of an issue: every item, untailored, each under an anchor the digests link to."""

from __future__ import annotations

from collections.abc import Mapping

import jinja2

from newsletter.content.model import Issue
from newsletter.render.digest import DigestLinks, language_marks
from newsletter.render.environment import render_template
from newsletter.render.labels import chrome_for
from newsletter.render.view import disclaimer_text, group_items
from newsletter.taxonomy import SectorDef


def render_issue_page(
    issue: Issue,
    *,
    sectors: Mapping[str, SectorDef],
    links: DigestLinks,
    env: jinja2.Environment,
    language: str = "zh",
) -> str:
    chrome = chrome_for(language)
    web = links.archive(issue, language)
    every = {item.id for item in issue.items}
    groups = group_items(issue, every, web=web, bodies={}, sectors=sectors, chrome=chrome)
    context = {
        "t": chrome,
        "issue": issue,
        "title": chrome.title(issue),
        "issue_label": chrome.issue_label(issue),
        "groups": groups,
        "web": web,
        "disclaimer": disclaimer_text(issue),
        **language_marks(language),
    }
    return render_template(env, "web/issue.html.j2", context)
