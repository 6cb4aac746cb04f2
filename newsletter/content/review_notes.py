"""The importer's notes, read back from an issue's YAML comments for the review page.

`newsletter issue convert` writes the words behind each suggested sector and region as a comment
on its line (`- ai  # keyword: 人工智能 (3×)`) and weaker sector matches as commented-out lines.
Comments are not data, so the parser drops them; this reads them by the positions of the nodes
the parser reports, so a note is shown only where the importer (or an editor) wrote one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

_CANDIDATE = re.compile(r"^\s*#\s+-\s+([a-z0-9][a-z0-9-]*)\s+#\s*(.+?)\s*$")


@dataclass(frozen=True)
class ItemNotes:
    sectors: dict[str, str] = field(default_factory=dict)  # code -> "keyword: 人工智能 (3×)"
    regions: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, str] = field(default_factory=dict)  # weaker matches, not tagged


def _comment_after(lines: list[str], node: yaml.Node) -> str:
    rest = lines[node.end_mark.line][node.end_mark.column :]
    before, hash_, note = rest.partition("#")
    return note.strip() if hash_ and not before.strip() else ""


def _codes(lines: list[str], node: yaml.Node | None) -> dict[str, str]:
    if not isinstance(node, yaml.SequenceNode):
        return {}
    notes: dict[str, str] = {}
    for child in node.value:
        if isinstance(child, yaml.ScalarNode) and (note := _comment_after(lines, child)):
            notes[str(child.value)] = note
    return notes


def _candidates(lines: list[str], after: yaml.Node, until: int) -> dict[str, str]:
    # A block sequence ends where the next key starts: read from its last entry's line on.
    last = after.value[-1] if isinstance(after, yaml.SequenceNode) and after.value else after
    found: dict[str, str] = {}
    for line in lines[last.end_mark.line + 1 : until + 1]:
        if match := _CANDIDATE.match(line):
            found[match.group(1)] = match.group(2)
    return found


def _value(mapping: yaml.MappingNode, key: str) -> yaml.Node | None:
    for key_node, value in mapping.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            found: yaml.Node = value
            return found
    return None


def item_notes(text: str) -> dict[str, ItemNotes]:
    """The notes of each item by id; empty for text that does not parse (its error is shown
    elsewhere) or that carries no comments."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(root, yaml.MappingNode):
        return {}
    items = _value(root, "items")
    if not isinstance(items, yaml.SequenceNode):
        return {}
    lines = text.splitlines() + [""]
    out: dict[str, ItemNotes] = {}
    for node in items.value:
        if not isinstance(node, yaml.MappingNode):
            continue
        ident = _value(node, "id")
        if not isinstance(ident, yaml.ScalarNode):
            continue
        sectors = _value(node, "sectors")
        regions = _value(node, "regions")
        candidates: dict[str, str] = {}
        if sectors is not None:
            until = regions.start_mark.line if regions is not None else node.end_mark.line
            candidates = _candidates(lines, sectors, until)
        out[str(ident.value)] = ItemNotes(
            _codes(lines, sectors), _codes(lines, regions), candidates
        )
    return out
