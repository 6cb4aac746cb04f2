"""Characters no issue may hold: controls, lone surrogates and Unicode non-characters.

None of them is visible in a digest, and several break the pipeline after import: ESC, BS, BEL
or U+FFFE make the MJML parser refuse the template, and a lone surrogate cannot be encoded as
UTF-8 at all. So they are refused where text comes in, with the place to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_C0_NAMES = (
    "NUL SOH STX ETX EOT ENQ ACK BEL BS HT LF VT FF CR SO SI "
    "DLE DC1 DC2 DC3 DC4 NAK SYN ETB CAN EM SUB ESC FS GS RS US"
).split()
# Non-characters: U+FDD0..U+FDEF and the last two code points of every plane.
_NONCHARS = "\ufdd0-\ufdef" + "".join(
    f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17)
)
_BEYOND_C0 = f"\x7f-\x9f\ud800-\udfff{_NONCHARS}"
_ALWAYS = f"\x00-\x08\x0b-\x1f{_BEYOND_C0}"
# Tab and line feed are text in a paragraph field (body, summary, intro), not in a title.
_IN_PARAGRAPHS = re.compile(f"[{_ALWAYS}]")
_IN_LINES = re.compile(f"[\t\n{_ALWAYS}]")
# The journal's text export: form feeds mark page breaks, and the lexer reads them as such.
_IN_EXPORT = re.compile(f"[\x00-\x08\x0b\x0d-\x1f{_BEYOND_C0}]")


def describe(ch: str) -> str:
    """`control character U+001B (ESC)`, `lone surrogate U+D800`, `non-character U+FFFE`."""
    code = ord(ch)
    if 0xD800 <= code <= 0xDFFF:
        return f"lone surrogate U+{code:04X}"
    if code < 0x20 or 0x7F <= code <= 0x9F:
        name = _C0_NAMES[code] if code < 0x20 else "DEL" if code == 0x7F else ""
        return f"control character U+{code:04X}" + (f" ({name})" if name else "")
    return f"non-character U+{code:04X}"


@dataclass(frozen=True)
class BadCharacter:
    """The first refused character of a text: its 1-based line and column, and the character."""

    line: int
    column: int
    char: str
    lines: int  # how many lines the text has: a line number helps only when it has several

    @property
    def where(self) -> str:
        return (
            f"line {self.line}, column {self.column}" if self.lines > 1 else f"column {self.column}"
        )

    @property
    def problem(self) -> str:
        if self.char == "\n":  # only refused in a one-line field
            return f"line break at column {self.column}; this field is one line"
        return f"{describe(self.char)} at {self.where}; remove it"


def _first(pattern: re.Pattern[str], text: str) -> BadCharacter | None:
    match = pattern.search(text)
    if match is None:
        return None
    start = match.start()
    line_start = text.rfind("\n", 0, start) + 1
    line = text.count("\n", 0, start) + 1
    return BadCharacter(line, start - line_start + 1, match.group(), text.count("\n") + 1)


def first_bad_character(text: str, *, multiline: bool) -> BadCharacter | None:
    """The first character an issue field may not hold (tab and newline only in paragraphs)."""
    return _first(_IN_PARAGRAPHS if multiline else _IN_LINES, text)


def first_bad_in_export(text: str) -> BadCharacter | None:
    """The same for a whole text export, where tab, newline and form feed are allowed."""
    return _first(_IN_EXPORT, text)
