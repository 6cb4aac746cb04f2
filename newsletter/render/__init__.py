"""Jinja2 to MJML to HTML: tailored digests, their text part, the web version, the profile cache."""

from __future__ import annotations

from newsletter.render.cache import ProfileCache
from newsletter.render.digest import (
    GREETING,
    HTML_LIMIT,
    PLACEHOLDERS,
    PREFERENCES_URL,
    RECIPIENT_NAME,
    UNSUBSCRIBE_URL,
    DigestLinks,
    Recipient,
    RenderedDigest,
    personalise,
    render_digest,
)
from newsletter.render.environment import (
    TemplateRenderError,
    default_templates_dir,
    make_environment,
)
from newsletter.render.labels import UnknownLanguageError
from newsletter.render.web import render_issue_page

__all__ = [
    "GREETING",
    "HTML_LIMIT",
    "PLACEHOLDERS",
    "PREFERENCES_URL",
    "RECIPIENT_NAME",
    "UNSUBSCRIBE_URL",
    "DigestLinks",
    "ProfileCache",
    "Recipient",
    "RenderedDigest",
    "TemplateRenderError",
    "UnknownLanguageError",
    "default_templates_dir",
    "make_environment",
    "personalise",
    "render_digest",
    "render_issue_page",
]
