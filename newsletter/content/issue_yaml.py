"""Load and dump the YAML issue file; errors name the file, line and field."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import yaml

from newsletter.content.charset import describe, first_bad_character
from newsletter.content.model import (
    NUMBERS,
    SECTION_BY_CODE,
    YEARS,
    Contact,
    Issue,
    Item,
    Organiser,
)
from newsletter.errors import ContentError

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
_REGION_RE = re.compile(r"^[A-Z]{2}$|^[a-z][a-z0-9-]{1,39}$")
# Fields holding paragraphs, where tab and newline are text; every other field is one line.
_PARAGRAPH_FIELDS = frozenset({"body", "summary", "intro", "disclaimer"})
# An issue nests four levels (issue, items, item, sectors); PyYAML's composer recurses once a
# level, so a crafted file thousands deep would end in RecursionError instead of a message.
MAX_DEPTH = 12
_OPENS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSES = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


class IssueFileError(ContentError):
    """A problem at one place of an issue file."""

    def __init__(self, source: str, line: int | None, field_name: str, problem: str) -> None:
        self.source = source
        self.line = line
        self.field_name = field_name
        self.problem = problem
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {field_name}: {problem}")


class YamlSyntaxError(IssueFileError):
    """Not well-formed YAML: `FILE:LINE:COLUMN: YAML syntax error: ...`, where the parser stopped."""

    def __init__(self, source: str, line: int, column: int, problem: str) -> None:
        self.source, self.line, self.column = source, line, column
        self.field_name, self.problem = "yaml", problem
        ContentError.__init__(self, f"{source}:{line}:{column}: YAML syntax error: {problem}")

    @classmethod
    def of(cls, source: str, error: yaml.MarkedYAMLError) -> YamlSyntaxError:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = error.problem or error.context or "not valid YAML"
        begun = error.context_mark
        if error.context and error.problem and begun is not None:
            problem += f" ({error.context} on line {begun.line + 1})"
        return cls(source, line, column, problem)


@dataclass
class _Ctx:
    source: str
    sector_codes: Collection[str] | None


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _mapping(node: yaml.Node, ctx: _Ctx, name: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise IssueFileError(ctx.source, _line(node), name, "must be a mapping of key: value")
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if key in out:
            raise IssueFileError(ctx.source, _line(key_node), f"{name}.{key}", "appears twice")
        out[key] = (key_node, value_node)
    return out


def _scalar(node: yaml.Node, ctx: _Ctx, name: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise IssueFileError(ctx.source, _line(node), name, "must be a single value, not a list")
    return str(node.value)


def _text(
    fields: Mapping[str, tuple[yaml.Node, yaml.Node]],
    key: str,
    ctx: _Ctx,
    prefix: str,
    *,
    required: bool = False,
    anchor: yaml.Node,
    label: str = "",
) -> str:
    """A text field; `label` names it in a bad-character error (`item 3 (a7) summary`)."""
    name = f"{prefix}{key}"
    if key not in fields:
        if required:
            raise IssueFileError(ctx.source, _line(anchor), name, "is missing")
        return ""
    node = fields[key][1]
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        value = ""
    else:
        value = _scalar(node, ctx, name).strip()
    multiline = key in _PARAGRAPH_FIELDS
    if bad := first_bad_character(value, multiline=multiline):
        raise IssueFileError(ctx.source, _line(node), label or name, bad.problem)
    if required and not value:
        raise IssueFileError(ctx.source, _line(node), name, "is empty")
    return value


def _shown(raw: str) -> str:
    """A value as quoted in a message, cut short: a crafted one can be thousands of characters."""
    return repr(raw) if len(raw) <= 24 else f"{raw[:12]!r}... ({len(raw)} characters)"


def _int(
    fields: Mapping[str, tuple[yaml.Node, yaml.Node]],
    key: str,
    ctx: _Ctx,
    anchor: yaml.Node,
    bounds: range,
) -> int:
    raw = _text(fields, key, ctx, "", required=True, anchor=anchor)
    node = fields[key][1]
    within = f"must be from {bounds.start} to {bounds.stop - 1}"
    if raw.isdecimal() and len(raw) > len(str(bounds.stop)):
        # int() of thousands of digits is refused by Python itself (and slow before that).
        raise IssueFileError(ctx.source, _line(node), key, f"{within}, not {_shown(raw)}")
    try:
        value = int(raw)
    except ValueError:
        raise IssueFileError(
            ctx.source, _line(node), key, f"must be a whole number, not {_shown(raw)}"
        ) from None
    if value not in bounds:
        raise IssueFileError(ctx.source, _line(node), key, f"{within}, not {value}")
    return value


def _codes(node: yaml.Node, ctx: _Ctx, name: str) -> tuple[str, ...]:
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise IssueFileError(ctx.source, _line(node), name, "must be a list such as [ai, software]")
    return tuple(_scalar(child, ctx, name).strip() for child in node.value)


def _bool(node: yaml.Node, ctx: _Ctx, name: str) -> bool:
    raw = _scalar(node, ctx, name).strip().lower()
    if raw in {"true", "yes"}:
        return True
    if raw in {"false", "no", ""}:
        return False
    raise IssueFileError(ctx.source, _line(node), name, f"must be true or false, not {raw!r}")


def _item(node: yaml.Node, index: int, ctx: _Ctx, seen: dict[str, int]) -> Item:
    prefix = f"items[{index}]."
    fields = _mapping(node, ctx, f"items[{index}]")
    known = {
        "id", "section", "title", "body", "source", "sectors", "regions", "always", "summary",
        "actionable",
    }  # fmt: skip
    for key, (key_node, _) in fields.items():
        if key not in known:
            raise IssueFileError(
                ctx.source,
                _line(key_node),
                prefix + key,
                f"unknown field; use one of {sorted(known)}",
            )
    item_id = _text(fields, "id", ctx, prefix, required=True, anchor=node)
    id_line = _line(fields["id"][1])
    if not _ID_RE.match(item_id):
        raise IssueFileError(
            ctx.source,
            id_line,
            prefix + "id",
            f"{item_id!r} must be lowercase letters, digits and dashes",
        )
    if item_id in seen:
        raise IssueFileError(
            ctx.source,
            id_line,
            prefix + "id",
            f"{item_id!r} is already used on line {seen[item_id]}",
        )
    seen[item_id] = id_line
    section = _text(fields, "section", ctx, prefix, required=True, anchor=node)
    if section not in SECTION_BY_CODE:
        raise IssueFileError(
            ctx.source,
            _line(fields["section"][1]),
            prefix + "section",
            f"unknown section {section!r}; use one of {', '.join(SECTION_BY_CODE)}",
        )
    sectors = _codes(fields["sectors"][1], ctx, prefix + "sectors") if "sectors" in fields else ()
    if ctx.sector_codes is not None:
        for code in sectors:
            if code not in ctx.sector_codes:
                raise IssueFileError(
                    ctx.source,
                    _line(fields["sectors"][1]),
                    prefix + "sectors",
                    f"unknown sector code {code!r}; see `newsletter sectors list`",
                )
    regions = _codes(fields["regions"][1], ctx, prefix + "regions") if "regions" in fields else ()
    for region in regions:
        if not _REGION_RE.match(region):
            raise IssueFileError(
                ctx.source,
                _line(fields["regions"][1]),
                prefix + "regions",
                f"{region!r} is neither an ISO country code (DE) nor a region code (eu)",
            )

    def text(key: str, *, required: bool = False) -> str:
        label = f"item {index + 1} ({item_id}) {key}"
        return _text(fields, key, ctx, prefix, required=required, anchor=node, label=label)

    return Item(
        id=item_id,
        section=section,
        title=text("title", required=True),
        body=text("body", required=True),
        source=text("source") or None,
        sectors=tuple(dict.fromkeys(sectors)),
        regions=tuple(dict.fromkeys(regions)),
        always=_bool(fields["always"][1], ctx, prefix + "always") if "always" in fields else False,
        summary=text("summary"),
        actionable=(
            _bool(fields["actionable"][1], ctx, prefix + "actionable")
            if "actionable" in fields
            else False
        ),
    )


def _events(text: str) -> Iterator[tuple[int, yaml.Event]]:
    """The parser's events with the nesting depth at each; the parser itself does not recurse."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, _CLOSES):
            depth -= 1
        yield depth, event
        if isinstance(event, _OPENS):
            depth += 1


def _refuse_deep_nesting(text: str, source: str) -> None:
    key, expect_key = "yaml", True
    for depth, event in _events(text):
        if depth == 1 and not isinstance(event, _CLOSES):
            if expect_key and isinstance(event, yaml.ScalarEvent):
                key = str(event.value)  # the top-level field the nesting is under
            expect_key = not expect_key
        if depth >= MAX_DEPTH and isinstance(event, _OPENS):
            mark = event.start_mark
            raise IssueFileError(
                source, mark.line + 1 if mark else None, key,
                f"lists or mappings nested more than {MAX_DEPTH} deep; an issue file needs 4",
            )  # fmt: skip


def top_level_keys(text: str) -> set[str] | None:
    """The keys of a YAML mapping document, read without building it (None: not a mapping).

    A file broken further down still counts by the keys before the break, so that it gets the
    YAML error and not the plain-text importer's. Reading stops at `MAX_DEPTH`: PyYAML's
    scanner slows down with every open level (50,000 take minutes), and a mapping nested that
    deep is an attempt at an issue file whose error `load_issue` gives; `"items"` stands in for
    the keys not read.
    """
    keys: set[str] = set()
    expect_key = False
    try:
        for depth, event in _events(text):
            if isinstance(event, yaml.DocumentEndEvent):
                break
            if depth >= MAX_DEPTH:
                return keys | {"items"}
            if depth == 0 and isinstance(event, (*_OPENS, yaml.ScalarEvent, yaml.AliasEvent)):
                if not isinstance(event, yaml.MappingStartEvent):
                    return None
                expect_key = True
            elif depth == 1 and not isinstance(event, _CLOSES):
                if expect_key and isinstance(event, yaml.ScalarEvent):
                    keys.add(str(event.value))
                expect_key = not expect_key
    except yaml.YAMLError:
        pass
    return keys if expect_key or keys else None


def load_issue(
    text: str, *, source: str = "<issue>", sector_codes: Collection[str] | None = None
) -> Issue:
    """Parse an issue file. `sector_codes`, when given, is the taxonomy items must use."""
    ctx = _Ctx(source, sector_codes)
    try:
        _refuse_deep_nesting(text, source)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise YamlSyntaxError.of(source, exc) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise IssueFileError(
            source, line, "yaml", f"{describe(chr(exc.character))}; remove it"
        ) from None
    except yaml.YAMLError as exc:
        raise IssueFileError(source, None, "yaml", str(exc).replace("\n", " ")) from None
    if root is None:
        raise IssueFileError(
            source, None, "file", "is empty; an issue needs publication, year, number and items"
        )
    top = _mapping(root, ctx, "issue")
    known = {
        "publication", "title_en", "year", "number", "slug", "date", "intro", "organisers",
        "items", "contact", "disclaimer",
    }  # fmt: skip
    for key, (key_node, _) in top.items():
        if key not in known:
            raise IssueFileError(
                source, _line(key_node), key, f"unknown field; use one of {sorted(known)}"
            )
    date_raw = _text(top, "date", ctx, "", anchor=root)
    date = None
    if date_raw:
        try:
            date = dt.date.fromisoformat(date_raw)
        except ValueError as exc:
            # "day is out of range for month" says what is wrong with 2030-02-30.
            why = f" ({exc})" if re.fullmatch(r"\d{4}-\d{2}-\d{2}", date_raw) else ""
            raise IssueFileError(
                source, _line(top["date"][1]), "date",
                f"{_shown(date_raw)} is not a date{why}; write it like 2020-08-01",
            ) from None  # fmt: skip
    if "items" not in top:
        raise IssueFileError(source, _line(root), "items", "is missing")
    items_node = top["items"][1]
    if not isinstance(items_node, yaml.SequenceNode) or not items_node.value:
        raise IssueFileError(
            source, _line(items_node), "items", "must be a non-empty list of items"
        )
    seen: dict[str, int] = {}
    items = tuple(_item(node, i, ctx, seen) for i, node in enumerate(items_node.value))
    contact = Contact()
    if "contact" in top:
        c = _mapping(top["contact"][1], ctx, "contact")
        contact = Contact(
            phone=_text(c, "phone", ctx, "contact.", anchor=root),
            email=_text(c, "email", ctx, "contact.", anchor=root),
        )
    organisers: list[Organiser] = []
    if "organisers" in top:
        node = top["organisers"][1]
        if not isinstance(node, yaml.SequenceNode):
            raise IssueFileError(
                source, _line(node), "organisers", "must be a list of {role, name}"
            )
        for i, child in enumerate(node.value):
            o = _mapping(child, ctx, f"organisers[{i}]")
            organisers.append(
                Organiser(
                    role=_text(o, "role", ctx, f"organisers[{i}].", required=True, anchor=child),
                    name=_text(o, "name", ctx, f"organisers[{i}].", required=True, anchor=child),
                )
            )
    slug = _text(top, "slug", ctx, "", anchor=root) or None
    if slug and not _ID_RE.match(slug):
        raise IssueFileError(
            source, _line(top["slug"][1]), "slug", f"{slug!r} must be like 2020-01"
        )
    return Issue(
        publication=_text(top, "publication", ctx, "", required=True, anchor=root),
        title_en=_text(top, "title_en", ctx, "", anchor=root),
        year=_int(top, "year", ctx, root, YEARS),
        number=_int(top, "number", ctx, root, NUMBERS),
        slug_override=slug,
        date=date,
        intro=_text(top, "intro", ctx, "", anchor=root),
        organisers=tuple(organisers),
        items=items,
        contact=contact,
        disclaimer=_text(top, "disclaimer", ctx, "", anchor=root),
    )


@dataclass
class IssueComments:
    """Comments to write into a dumped issue so staff can review machine suggestions."""

    header: list[str] = field(default_factory=list)
    items: dict[str, list[str]] = field(default_factory=dict)
    sectors: dict[str, dict[str, str]] = field(default_factory=dict)
    candidates: dict[str, dict[str, str]] = field(default_factory=dict)  # weaker sector matches
    regions: dict[str, dict[str, str]] = field(default_factory=dict)


def _scalar_yaml(value: str) -> str:
    dumped = yaml.safe_dump(value, allow_unicode=True, width=10_000, default_style=None)
    return dumped.removesuffix("\n...\n").rstrip("\n")


def _block(key: str, value: str, indent: str) -> list[str]:
    if "\n" not in value.strip():
        return [f"{indent}{key}: {_scalar_yaml(value.strip())}"]
    lines = [f"{indent}{key}: |"]
    for line in value.strip().splitlines():
        lines.append(f"{indent}  {line}".rstrip())
    return lines


def _code_list(key: str, codes: Sequence[str], notes: Mapping[str, str], indent: str) -> list[str]:
    if not codes:
        return [f"{indent}{key}: []"]
    if not notes:
        return [f"{indent}{key}: [{', '.join(codes)}]"]
    lines = [f"{indent}{key}:"]
    for code in codes:
        note = notes.get(code)
        lines.append(f"{indent}  - {code}" + (f"  # {note}" if note else ""))
    return lines


def _candidates(notes: Mapping[str, str], indent: str) -> list[str]:
    """Weaker sector matches as comments: staff add a code to `sectors` if the item is about it."""
    if not notes:
        return []
    lines = [f"{indent}# weaker candidates, not tagged (one passing mention; add any that fit):"]
    lines.extend(f"{indent}#   - {code}  # {note}" for code, note in notes.items())
    return lines


def dump_issue(issue: Issue, comments: IssueComments | None = None) -> str:
    """The canonical YAML text of an issue; `load_issue(dump_issue(x)) == x`."""
    notes = comments or IssueComments()
    out: list[str] = [f"# {line}" for line in notes.header]
    out.append(f"publication: {_scalar_yaml(issue.publication)}")
    if issue.title_en:
        out.append(f"title_en: {_scalar_yaml(issue.title_en)}")
    out.append(f"year: {issue.year}")
    out.append(f"number: {issue.number}")
    if issue.slug_override:
        out.append(f"slug: {issue.slug_override}")
    if issue.date:
        out.append(f"date: {issue.date.isoformat()}")
    if issue.organisers:
        out.append("organisers:")
        for o in issue.organisers:
            out.append(f"  - {{role: {_scalar_yaml(o.role)}, name: {_scalar_yaml(o.name)}}}")
    if issue.intro:
        out.extend(_block("intro", issue.intro, ""))
    out.append("items:")
    for item in issue.items:
        out.append("")
        out.extend(f"  # {line}" for line in notes.items.get(item.id, []))
        out.append(f"  - id: {item.id}")
        out.append(f"    section: {item.section}")
        out.append(f"    title: {_scalar_yaml(item.title)}")
        if item.summary:
            out.extend(_block("summary", item.summary, "    "))
        out.extend(_block("body", item.body, "    "))
        if item.source:
            out.append(f"    source: {_scalar_yaml(item.source)}")
        out.extend(_code_list("sectors", item.sectors, notes.sectors.get(item.id, {}), "    "))
        out.extend(_candidates(notes.candidates.get(item.id, {}), "    "))
        out.extend(_code_list("regions", item.regions, notes.regions.get(item.id, {}), "    "))
        if item.always:
            out.append("    always: true")
        if item.actionable:
            out.append("    actionable: true")
    out.append("")
    if issue.contact.phone or issue.contact.email:
        out.append("contact:")
        if issue.contact.phone:
            out.append(f"  phone: {_scalar_yaml(issue.contact.phone)}")
        if issue.contact.email:
            out.append(f"  email: {_scalar_yaml(issue.contact.email)}")
    if issue.disclaimer:
        out.extend(_block("disclaimer", issue.disclaimer, ""))
    return "\n".join(out) + "\n"
