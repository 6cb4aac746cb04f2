"""The console's languages: Chinese in the templates, English from a gettext catalogue.

The source strings are the Chinese labels, so a Chinese reader needs no catalogue at all. The
English catalogue is the `.po` file itself, compiled in memory when first asked for: no build
step and no binary in git, and an edit to the `.po` shows at the next start.
"""

from __future__ import annotations

import gettext
import io
from functools import cache
from pathlib import Path

import jinja2
from babel.messages import mofile, pofile

CHINESE = "zh"
ENGLISH = "en"
LOCALES = (CHINESE, ENGLISH)
DOMAIN = "console"
CATALOGUES = Path(__file__).parent / "locale"
# What `<html lang>` says for each choice.
HTML_LANG = {CHINESE: "zh-CN", ENGLISH: "en"}
# The name in the render context that says which language a page is in.
LOCALE_KEY = "console_locale"


def po_path(locale: str) -> Path:
    return CATALOGUES / locale / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def translations(locale: str) -> gettext.NullTranslations:
    """The catalogue of `locale`; Chinese (the source language) and unknown codes get none."""
    path = po_path(locale)
    if locale == CHINESE or not path.is_file():
        return gettext.NullTranslations()
    with path.open("rb") as po:
        catalogue = pofile.read_po(po, locale=locale, domain=DOMAIN)
    compiled = io.BytesIO()
    mofile.write_mo(compiled, catalogue)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def normal(locale: str | None) -> str:
    return locale if locale in LOCALES else CHINESE


@jinja2.pass_context
def _gettext(context: jinja2.runtime.Context, message: str) -> str:
    return translations(normal(context.get(LOCALE_KEY))).gettext(message)


@jinja2.pass_context
def _ngettext(context: jinja2.runtime.Context, singular: str, plural: str, n: int) -> str:
    return translations(normal(context.get(LOCALE_KEY))).ngettext(singular, plural, n)


@jinja2.pass_context
def _pgettext(context: jinja2.runtime.Context, where: str, message: str) -> str:
    # A context tells apart one Chinese word with two English ones (期刊: Issue, Issues).
    return translations(normal(context.get(LOCALE_KEY))).pgettext(where, message)


def install(env: jinja2.Environment) -> None:
    """`{% trans %}` and `_()` in `env` translate into the page's own `console_locale`.

    One environment serves both languages: the callables read the language from the render
    context (newstyle gettext calls them through `context.call`), so two requests rendering at
    once in different languages never share a setting.
    """
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(  # type: ignore[attr-defined]
        _gettext, _ngettext, newstyle=True, pgettext=_pgettext
    )
