"""Issues: the list, the import (YAML or the journal's text), the review page and its YAML editor.

An import with converter warnings is shown first, each warning beside its line of the upload,
and stored only when the editor confirms it; one without warnings is stored at once. Either way
the answer to the storing POST is a 303 to the issue's page.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.responses import Response

from newsletter.console.access import allowed, refused, signed_in
from newsletter.console.context import console, see_other
from newsletter.content.issue_intake import looks_like_issue_yaml
from newsletter.content.model import SECTIONS
from newsletter.content.review_notes import item_notes
from newsletter.content.textdecode import decode_export, normalise_newlines
from newsletter.errors import ContentError, NotFoundError
from newsletter.roles import Permission
from newsletter.services import issues
from newsletter.services.logins import Who

router = APIRouter(prefix="/admin/issues")

# An issue's text export is some 100 KB; ten times that is not an issue.
MAX_UPLOAD = 2 * 1024 * 1024
TOO_BIG = (
    "文件过大（上限 2 MB）。The file is too large (2 MB at most): is it the issue's text export?"
)
NO_FILE = "请选择要导入的文件。Choose a file to import (YAML or the journal's text export)."
NOT_FOUND = "没有这一期。No such issue."
TextField = Annotated[str, Form(max_length=400)]
# The confirm step carries the upload back, base64: 4/3 of MAX_UPLOAD.
Carried = Annotated[str, Form(max_length=MAX_UPLOAD * 4 // 3 + 8)]
YamlField = Annotated[str, Form(max_length=MAX_UPLOAD)]


@dataclass(frozen=True)
class Line:
    """A warning or an error beside the line of the upload it is about."""

    line: int | None
    message: str
    text: str


def _lines(data: bytes, source: str) -> list[str]:
    """The upload's lines as the importer numbers them; none when it cannot be read."""
    try:
        if looks_like_issue_yaml(data, source):
            text = data.decode("utf-8-sig")
        else:
            text = decode_export(data, source=source)
    except (ContentError, UnicodeDecodeError):
        return []
    return normalise_newlines(text).split("\n")


def _beside(lines: list[str], line: int | None, message: str) -> Line:
    text = lines[line - 1] if line and 0 < line <= len(lines) else ""
    return Line(line, message, text)


def _warning(lines: list[str], source: str, warning: str) -> Line:
    """`source:LINE: message`, as the importer words it, split for the page."""
    rest = warning.removeprefix(f"{source}:")
    number, sep, message = rest.partition(": ")
    if sep and number.isdigit():
        return _beside(lines, int(number), message)
    return Line(None, warning, "")


def _problem(lines: list[str], source: str, exc: ContentError) -> Line:
    # A converted text that fails to load fails on a line of the YAML made from it, not the upload.
    on_upload = getattr(exc, "source", source) == source
    return _beside(lines, getattr(exc, "line", None) if on_upload else None, str(exc))


@router.get("")
def issue_list(request: Request) -> Response:
    ctx = console(request)
    who = allowed(request, Permission.READ_ISSUES)
    if not isinstance(who, Who):
        return who
    values = {
        "who": who,
        "issues": issues.list_summaries(ctx.settings, db=ctx.engine),
        "can_import": who.can(Permission.EDIT_ISSUES),
    }
    return ctx.page(request, "issues.html.j2", values)


def _import_page(
    request: Request, who: Who, *, status: int = 200, error: Line | None = None,
    checked: issues.CheckedIssue | None = None, warnings: list[Line] | None = None,
    carried: str = "", source: str = "",
) -> Response:  # fmt: skip
    values = {
        "who": who, "error": error, "checked": checked, "warnings": warnings or [],
        "carried": carried, "source": source,
    }  # fmt: skip
    return console(request).page(
        request, "issues_import.html.j2", values, form="issue-import", session=who.session_id,
        status=status,
    )  # fmt: skip


@router.get("/import")
def import_form(request: Request) -> Response:
    who = allowed(request, Permission.EDIT_ISSUES)
    return who if not isinstance(who, Who) else _import_page(request, who)


def _source_name(name: str) -> str:
    # The browser's file name only labels messages: no folders, nothing unprintable.
    cleaned = "".join(c for c in name.replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable())
    return cleaned[:120] or "upload.txt"


@router.post("/import")
def import_upload(
    request: Request,
    file: Annotated[UploadFile | None, File()] = None,
    csrf: TextField = "",
    carried: Carried = "",
    source: TextField = "",
) -> Response:
    ctx = console(request)
    who = signed_in(request)
    if not isinstance(who, Who):
        return who
    ctx.check_form(request, csrf, "issue-import", who.session_id)
    if not who.can(Permission.EDIT_ISSUES):
        return refused(request)
    confirmed = bool(carried)
    if confirmed:
        try:
            data = base64.b64decode(carried, validate=True)
        except (binascii.Error, ValueError):
            return _import_page(request, who, status=400, error=Line(None, NO_FILE, ""))
        source = _source_name(source)
    else:
        if file is None or not file.filename:
            return _import_page(request, who, status=400, error=Line(None, NO_FILE, ""))
        data = file.file.read(MAX_UPLOAD + 1)  # a sync route: FastAPI runs it off the loop
        source = _source_name(file.filename)
    if len(data) > MAX_UPLOAD:
        return _import_page(request, who, status=413, error=Line(None, TOO_BIG, ""))
    lines = _lines(data, source)
    try:
        checked = issues.check_issue(ctx.settings, data, source=source, db=ctx.engine)
        if checked.warnings and not confirmed:
            shown = [_warning(lines, source, w) for w in checked.warnings]
            encoded = base64.b64encode(data).decode()
            return _import_page(
                request, who, checked=checked, warnings=shown, carried=encoded, source=source
            )
        imported = issues.import_issue(
            ctx.settings, data, source=source, actor=who.actor, db=ctx.engine
        )
    except ContentError as exc:
        return _import_page(request, who, status=422, error=_problem(lines, source, exc))
    return see_other(f"/admin/issues/{imported.slug}?imported={imported.items}")


@dataclass(frozen=True)
class Chip:
    code: str
    label: str
    note: str


@dataclass(frozen=True)
class ItemView:
    id: str
    title: str
    sectors: tuple[Chip, ...]
    candidates: tuple[Chip, ...]
    regions: tuple[Chip, ...]
    always: bool
    source: str


def _sections(review: issues.IssueReview) -> list[tuple[str, list[ItemView]]]:
    if review.issue is None:
        return []
    notes = item_notes(review.source_yaml)
    names = {code: f"{s.zh} {s.en}" for code, s in review.sectors.items()}
    out: list[tuple[str, list[ItemView]]] = []
    for section in SECTIONS:
        views: list[ItemView] = []
        for item in review.issue.items_in(section.code):
            note = notes.get(item.id)
            views.append(
                ItemView(
                    item.id,
                    item.title,
                    tuple(
                        Chip(c, names.get(c, c), note.sectors.get(c, "") if note else "")
                        for c in item.sectors
                    ),
                    tuple(
                        Chip(c, names.get(c, c), n)
                        for c, n in (note.candidates if note else {}).items()
                    ),
                    tuple(
                        Chip(c, c, note.regions.get(c, "") if note else "") for c in item.regions
                    ),
                    item.always,
                    item.source or "",
                )  # fmt: skip
            )
        if views:
            out.append((f"{section.zh} {section.en}", views))
    return out


def _issue_page(
    request: Request, who: Who, review: issues.IssueReview, *, text: str | None = None,
    error: Line | None = None, status: int = 200,
) -> Response:  # fmt: skip
    query = request.query_params
    values = {
        "who": who, "review": review, "sections": _sections(review),
        "yaml": review.source_yaml if text is None else text, "error": error,
        "can_edit": who.can(Permission.EDIT_ISSUES) and not review.sent,
        "imported": query.get("imported", ""), "saved": query.get("saved", "") == "1",
    }  # fmt: skip
    return console(request).page(
        request, "issues_review.html.j2", values, form="issue-yaml", session=who.session_id,
        status=status,
    )  # fmt: skip


@router.get("/{slug}")
def issue_page(request: Request, slug: str) -> Response:
    ctx = console(request)
    who = allowed(request, Permission.READ_ISSUES)
    if not isinstance(who, Who):
        return who
    try:
        review = issues.review_issue(ctx.settings, slug, db=ctx.engine)
    except NotFoundError:
        return refused(request, NOT_FOUND, 404)
    return _issue_page(request, who, review)


@router.post("/{slug}/yaml")
def save_yaml(request: Request, slug: str, yaml: YamlField = "", csrf: TextField = "") -> Response:
    ctx = console(request)
    who = signed_in(request)
    if not isinstance(who, Who):
        return who
    ctx.check_form(request, csrf, "issue-yaml", who.session_id)
    if not who.can(Permission.EDIT_ISSUES):
        return refused(request)
    text = normalise_newlines(yaml)  # a browser sends a textarea's lines with CRLF
    try:
        issues.save_issue_yaml(ctx.settings, slug, text, actor=who.actor, db=ctx.engine)
    except NotFoundError:
        return refused(request, NOT_FOUND, 404)
    except ContentError as exc:
        review = issues.review_issue(ctx.settings, slug, db=ctx.engine)
        lines = text.split("\n")
        line = getattr(exc, "line", None)
        return _issue_page(
            request, who, review, text=text, error=_beside(lines, line, str(exc)), status=422
        )
    return see_other(f"/admin/issues/{slug}?saved=1")
