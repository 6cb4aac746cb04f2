"""The item body's small Markdown subset, to sanitised HTML, to plain text, and cut short."""

from __future__ import annotations

import functools
import html
import re
from dataclasses import dataclass
from typing import Literal

import nh3

_OL = re.compile(r"^(\d{1,2})\.\s+(.*)$")  # two digits at most, so "2020. " stays prose
_UL = re.compile(r"^-\s+(.*)$")
_HEADING = re.compile(r"^##\s+(.*)$")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_BLANK = re.compile(r"\n[ \t\u3000]*\n")
_ASCII_WORD = re.compile(r"[A-Za-z0-9,.;:!?)%]")

# Exactly the tags `to_html` emits; nh3 drops anything else, so a slip here cannot add markup.
_CLEANER = nh3.Cleaner(
    tags={"p", "h4", "ol", "ul", "li", "strong"},
    attributes={"ol": {"start"}},
    url_schemes=set(),
    link_rel=None,
)

BlockKind = Literal["p", "h", "ol", "ul"]


@dataclass(frozen=True)
class Block:
    """A paragraph, a sub-heading, or a list (`parts` are its items; `start` its first number)."""

    kind: BlockKind
    parts: tuple[str, ...]
    start: int = 1


def _join(left: str, right: str) -> str:
    """Join a line broken in the source: a space between Latin words, nothing between CJK ones."""
    if left and right and _ASCII_WORD.match(left[-1]) and _ASCII_WORD.match(right[0]):
        return f"{left} {right}"
    return left + right


def raw_blocks(body: str) -> list[str]:
    """The body's blank-line separated chunks, as written."""
    chunks = _BLANK.split(body.strip().replace("\r\n", "\n"))
    return [chunk.strip() for chunk in chunks if chunk.strip()]


def _chunk_blocks(chunk: str) -> list[Block]:
    out: list[Block] = []
    for line in (raw.strip() for raw in chunk.split("\n")):
        if not line:
            continue
        last = out[-1] if out else None
        if heading := _HEADING.match(line):
            out.append(Block("h", (heading.group(1).strip(),)))
        elif ordered := _OL.match(line):
            if last and last.kind == "ol":
                out[-1] = Block("ol", (*last.parts, ordered.group(2)), last.start)
            else:
                out.append(Block("ol", (ordered.group(2),), int(ordered.group(1))))
        elif bullet := _UL.match(line):
            if last and last.kind == "ul":
                out[-1] = Block("ul", (*last.parts, bullet.group(1)))
            else:
                out.append(Block("ul", (bullet.group(1),)))
        elif last and last.kind != "h":
            # A line without a marker continues the paragraph or the last list item (lazy
            # continuation, as Markdown does), since page layout breaks long lines anywhere.
            out[-1] = Block(last.kind, (*last.parts[:-1], _join(last.parts[-1], line)), last.start)
        else:
            out.append(Block("p", (line,)))
    return out


def parse(body: str) -> list[Block]:
    return [block for chunk in raw_blocks(body) for block in _chunk_blocks(chunk)]


def _inline(text: str) -> str:
    return _BOLD.sub(r"<strong>\1</strong>", html.escape(text, quote=False))


def _block_html(block: Block) -> str:
    if block.kind == "p":
        return f"<p>{_inline(block.parts[0])}</p>"
    if block.kind == "h":
        return f"<h4>{_inline(block.parts[0])}</h4>"
    items = "".join(f"<li>{_inline(part)}</li>" for part in block.parts)
    if block.kind == "ul":
        return f"<ul>{items}</ul>"
    start = f' start="{block.start}"' if block.start != 1 else ""
    return f"<ol{start}>{items}</ol>"


@functools.lru_cache(maxsize=2048)
def to_html(body: str) -> str:
    """Sanitised HTML for a body; cached, as every profile of an issue renders the same bodies."""
    return _CLEANER.clean("".join(_block_html(block) for block in parse(body)))


def _plain(text: str) -> str:
    return _BOLD.sub(r"\1", text)


def _block_text(block: Block) -> str:
    if block.kind == "p":
        return _plain(block.parts[0])
    if block.kind == "h":
        return f"【{_plain(block.parts[0])}】"
    if block.kind == "ul":
        return "\n".join(f"- {_plain(part)}" for part in block.parts)
    return "\n".join(f"{block.start + i}. {_plain(part)}" for i, part in enumerate(block.parts))


@functools.lru_cache(maxsize=2048)
def to_text(body: str) -> str:
    """The body for the text part: paragraphs between blank lines, list markers kept readable."""
    return "\n\n".join(_block_text(block) for block in parse(body))


def _is_heading(chunk: str) -> bool:
    return all(_HEADING.match(line.strip()) for line in chunk.split("\n"))


def cut(body: str, max_bytes: int) -> str:
    """The longest prefix of whole chunks within `max_bytes` of UTF-8, never less than one
    paragraph, and never ending on a sub-heading (which would announce text that is not there)."""
    kept: list[str] = []
    size = 0
    for chunk in raw_blocks(body):
        size += len(chunk.encode()) + 2
        if size > max_bytes and not all(_is_heading(c) for c in kept):
            break
        kept.append(chunk)
    while len(kept) > 1 and _is_heading(kept[-1]):
        kept.pop()
    return "\n\n".join(kept)
