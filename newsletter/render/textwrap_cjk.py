"""Line wrapping by display columns for mixed Chinese and Latin text, as a text part needs it.

Python's `textwrap` counts code points and breaks only at spaces: a Chinese paragraph (no spaces,
each character two columns wide) stays one 600-column line. Here a line may break between two
wide characters or at a space, never inside a Latin word, a URL or a placeholder, never before
closing punctuation (，。）》…) nor after opening punctuation (（《「), the rules Chinese
typesetting calls 避头尾.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from functools import lru_cache
from typing import NamedTuple

WIDTH = 72

# Never at the start of a line (closing marks, pauses, stops, the second half of a pair).
CLOSING = frozenset(
    "，。、：；！？）》」』】〕〗〙〉］｝〞’”…‥·・ー々〻ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ"
    "．｡､﹐﹑﹒﹔﹕﹖﹗﹚﹜﹞｠"
    ",.:;!?)]}"
)
# Never at the end of a line.
OPENING = frozenset("（《「『【〔〖〘〈［｛〝‘“｟﹙﹛﹝([{")

# Printable ASCII, not ending in sentence punctuation or an opening bracket (they belong to the
# text around the URL).
_URL = r"(?:https?://|mailto:|www\.)[!-~]*[A-Za-z0-9_/#=&~+\-%*$@)\]}]"
_NO_BREAK = "\u00a0\u2007\u202f"  # no-break spaces hold their neighbours together
_RUNS = re.compile(f"(?P<space>[^\\S{_NO_BREAK}]+)|(?:[^\\s]|[{_NO_BREAK}])+")


def char_width(char: str) -> int:
    """Columns a character takes in a fixed-width font: 2 for wide and full-width (CJK), 0 for
    combining marks, else 1 (East Asian ambiguous counts 1, as terminals outside CJK locales do)."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


@lru_cache(maxsize=65536)
def _wide(char: str) -> bool:
    return char_width(char) == 2


def width(text: str) -> int:
    """Display columns of `text`."""
    return sum(char_width(c) for c in text)


class _Piece(NamedTuple):
    text: str
    space: bool  # a run of white space: where a line may break, dropped when it does
    wide: bool  # one wide character: a line may break on either side
    atom: bool  # a URL or placeholder: never split, measured as `atoms` says


def _atoms_pattern(atoms: Collection[str]) -> re.Pattern[str]:
    named = "|".join(re.escape(a) for a in sorted(atoms, key=len, reverse=True))
    return re.compile(f"{named}|{_URL}" if named else _URL)


@lru_cache(maxsize=8)
def _compiled(atoms: tuple[str, ...]) -> re.Pattern[str]:
    return _atoms_pattern(atoms)


def _pieces(text: str, atom_re: re.Pattern[str]) -> list[_Piece]:
    out: list[_Piece] = []
    at = 0
    for found in atom_re.finditer(text):
        out.extend(_plain_pieces(text[at : found.start()]))
        out.append(_Piece(found.group(), False, False, True))
        at = found.end()
    out.extend(_plain_pieces(text[at:]))
    return out


def _plain_pieces(text: str) -> list[_Piece]:
    out: list[_Piece] = []
    for run in _RUNS.finditer(text):
        chunk = run.group()
        if run.lastgroup == "space":
            out.append(_Piece(chunk, True, False, False))
        elif chunk.isascii():
            # No break inside a Latin word; its edges are judged by their first and last mark.
            out.append(_Piece(chunk, False, False, False))
        else:
            out.extend(_mixed_pieces(chunk))
    return out


def _mixed_pieces(chunk: str) -> list[_Piece]:
    out: list[_Piece] = []
    word = ""
    for char in chunk:
        wide = _wide(char)
        if wide or char in CLOSING or char in OPENING:
            # Each is its own piece, so the rules below can hold punctuation to its neighbour.
            if word:
                out.append(_Piece(word, False, False, False))
                word = ""
            out.append(_Piece(char, False, wide, False))
        else:
            word += char
    if word:
        out.append(_Piece(word, False, False, False))
    return out


def _may_break(unit: list[_Piece], after: _Piece) -> bool:
    """Whether a line may end between the run so far and the next piece."""
    before = unit[-1]
    if after.space:
        return False  # break after the space, so it can be dropped
    if not after.atom and (after.text[0] in CLOSING or after.text[0] in _NO_BREAK):
        return False
    if before.text[-1] in _NO_BREAK:
        return False
    solid = next((p for p in reversed(unit) if p.text.strip()), None)
    if solid is not None and not solid.atom and solid.text.strip()[-1] in OPENING:
        return False  # "（" and what it opens stay together, white space between or not
    if before.space:
        return True
    return before.wide or after.wide


def _units(pieces: list[_Piece]) -> list[list[_Piece]]:
    """Runs of pieces with no break allowed inside (white space trails the run it follows)."""
    units: list[list[_Piece]] = []
    for piece in pieces:
        if units and not _may_break(units[-1], piece):
            units[-1].append(piece)
        else:
            units.append([piece])
    return units


def _measure(piece: _Piece, atoms: Mapping[str, int]) -> int:
    if piece.atom and piece.text in atoms:
        return atoms[piece.text]
    return width(piece.text)


def wrap(
    text: str,
    width_limit: int = WIDTH,
    *,
    indent: str = "",
    atoms: Mapping[str, int] | None = None,
) -> list[str]:
    """One line of text as lines of at most `width_limit` columns.

    A line is longer only when it holds one unit that cannot break (a URL, a long word) by
    itself. Continuation lines start with `indent`. `atoms` are tokens never split, each measured
    as the width it stands for (a placeholder for a long URL can ask for a line of its own).
    White space where a line breaks and at its end is dropped; every other character is kept, in
    order.
    """
    sizes = dict(atoms or {})
    pad = width(indent)
    lines: list[str] = []
    line: list[str] = []
    used = 0
    filled = False  # the line holds more than indentation
    for unit in _units(_pieces(text, _compiled(tuple(sorted(sizes))))):
        end = len(unit)
        while end and unit[end - 1].space:
            end -= 1
        body_width = sum(_measure(p, sizes) for p in unit[:end])
        if filled and end and used + body_width > width_limit:
            lines.append("".join(line).rstrip())
            line, used, filled = [indent], pad, False
        line.extend(p.text for p in unit)
        used += body_width + sum(width(p.text) for p in unit[end:])
        filled = filled or end > 0
    lines.append("".join(line).rstrip())
    return lines


_HANGING = re.compile(r"^(\s*(?:[-*•·]|\d{1,3}[.)、]|[■□●○◆◇▲△※])\s+|\s+)")


def hanging_indent(line: str) -> str:
    """Spaces as wide as a line's indent and list marker ("  3. ", "- ", "■ "), for what follows."""
    found = _HANGING.match(line)
    return " " * width(found.group()) if found else ""


class Wrapper:
    """Wraps whole texts line by line at one width, with one set of atoms, remembering lines.

    Every profile of an issue has the same paragraphs, so each is wrapped about once however
    many digests hold it; short lines without atoms are passed through without a lookup.
    """

    def __init__(
        self, width_limit: int = WIDTH, *, atoms: Mapping[str, int] | None = None,
        max_lines: int = 16384,
    ) -> None:  # fmt: skip
        self.width = width_limit
        self.atoms = dict(atoms or {})
        self.max_lines = max_lines
        # Lines of at most `short` characters cannot be wider than the width: they are left as
        # they are unless they hold an atom (which may stand for more than it shows). Atoms are
        # looked for by their first two characters, one substring test a line.
        # Lines of more than half the width in characters may be too wide; shorter ones need
        # wrapping only when they hold an atom measured wider than it is (a link's placeholder).
        self._long = re.compile(f"^.{{{width_limit // 2 + 1},}}$", re.MULTILINE)
        self._wide_atoms = tuple(a for a, size in self.atoms.items() if size > width(a))
        self._lines: dict[tuple[str, str], tuple[str, ...]] = {}  # by indent and text
        self._whole: dict[str, tuple[str, ...]] = {}  # by the line as it came

    def text(self, text: str) -> str:
        """Every line of `text` wrapped, list items and indented lines with a hanging indent."""
        # One regex pass finds the long lines; the rest of the text is never looked at in Python.
        text = self._long.sub(lambda found: "\n".join(self.line(found.group())), text)
        for atom in self._wide_atoms:
            at = text.find(atom)
            while at != -1:
                start = text.rfind("\n", 0, at) + 1
                end = text.find("\n", at)
                end = len(text) if end == -1 else end
                # Wrapping is idempotent: a line already wrapped above comes back as it is.
                wrapped = "\n".join(self.line(text[start:end]))
                text = text[:start] + wrapped + text[end:]
                at = text.find(atom, start + len(wrapped))
        return text

    def line(self, line: str) -> tuple[str, ...]:
        found = self._whole.get(line)
        if found is None:
            found = self._wrapped(line)
            if len(self._whole) >= self.max_lines:
                self._whole.clear()  # a new issue's lines; the old ones are not needed again
            self._whole[line] = found
        return found

    def _wrapped(self, line: str) -> tuple[str, ...]:
        # A list marker is remembered by its width only: "  3. title" in one profile's table of
        # contents is "  5. title" in another's, and wraps the same.
        marker = _HANGING.match(line)
        prefix = marker.group() if marker else ""
        indent = " " * width(prefix)
        key = (indent, line[len(prefix) :])
        found = self._lines.get(key)
        if found is None:
            found = tuple(wrap(indent + key[1], self.width, indent=indent, atoms=self.atoms))
            if len(self._lines) >= self.max_lines:
                self._lines.clear()
            self._lines[key] = found
        if prefix == indent:
            return found
        return (prefix + found[0][len(indent) :], *found[1:])


def wrap_text(
    text: str, width_limit: int = WIDTH, *, atoms: Mapping[str, int] | None = None
) -> str:
    """Every line of `text` wrapped, list items and indented lines with a hanging indent."""
    return Wrapper(width_limit, atoms=atoms).text(text)
