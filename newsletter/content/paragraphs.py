"""Paragraphs rebuilt from exported lines (wrapped lines and page breaks joined), and body text."""

from __future__ import annotations

from dataclasses import dataclass, field

from newsletter.content.cjktext import ends_sentence, join_pieces, tidy

TEXT, NUMBERED, BULLET, REFS, HEADING = "text", "numbered", "bullet", "refs", "heading"
# Kinds a line the export wrapped (no blank line between) continues; 参考资料： never wraps.
_WRAPPING = {TEXT, NUMBERED, BULLET}
# Longest numbered line still read as a sub-heading of an article, not as a list entry.
_HEADING_MAX = 60


@dataclass
class Paragraph:
    kind: str
    text: str
    line: int
    last_line: int
    marker: str = ""  # `1.` or `一、` of a numbered line


@dataclass(frozen=True)
class Join:
    """Two pieces joined across a blank line or page furniture: a guess staff should check."""

    line: int
    next_line: int
    before: str
    after: str

    @property
    def message(self) -> str:
        return (
            f"joined with line {self.next_line} across a page break "
            f"(…{tidy(self.before)[-10:]} | {tidy(self.after)[:10]}…); check the paragraph reads on"
        )


@dataclass
class ParagraphBuilder:
    paragraphs: list[Paragraph] = field(default_factory=list)
    joins: list[Join] = field(default_factory=list)
    _closed: bool = False

    def add(
        self, kind: str, text: str, *, line: int, last_line: int, gap: bool, marker: str = ""
    ) -> None:
        """Add a line; `gap` says a blank line or page furniture came before it."""
        last = self.paragraphs[-1] if self.paragraphs and not self._closed else None
        self._closed = False
        if last is not None and kind == TEXT and self._continues(last, gap):
            if gap:
                self.joins.append(Join(last.last_line, line, last.text, text))
            last.text = join_pieces(last.text, text)
            last.last_line = last_line
            return
        self.paragraphs.append(Paragraph(kind, text, line, last_line, marker))

    def close(self) -> None:
        """The next line starts a new paragraph: something (a phone number, say) came between."""
        self._closed = True

    @staticmethod
    def _continues(last: Paragraph, gap: bool) -> bool:
        if not gap:
            return last.kind in _WRAPPING
        # Across a page break only running text goes on, and only if its sentence is unfinished.
        return last.kind == TEXT and not ends_sentence(last.text)


def render_body(paragraphs: list[Paragraph], *, article: bool) -> str:
    """Body Markdown: paragraphs apart by a blank line, list lines together.

    In an `article` (the focus piece) a short numbered line that ends no sentence is a `## `
    sub-heading, except in the list after 参考资料：.
    """
    blocks: list[tuple[bool, str]] = []
    in_refs = False
    for para in paragraphs:
        text = tidy(para.text)
        if para.kind == REFS:
            in_refs = True
            blocks.append((False, text))
        elif para.kind == NUMBERED and article and not in_refs and _is_heading(text):
            blocks.append((False, f"## {para.marker} {text}".replace("、 ", "、")))
        elif para.kind == NUMBERED:
            blocks.append((True, f"{para.marker} {text}".replace("、 ", "、")))
        elif para.kind == HEADING:
            blocks.append((False, f"## {text}"))
        elif para.kind == BULLET:
            blocks.append((True, f"- {text}"))
        else:
            in_refs = False
            blocks.append((False, text))
    return _join_blocks(blocks)


def render_paragraphs(paragraphs: list[Paragraph]) -> str:
    """Plain paragraphs (an introduction, a summary) apart by a blank line."""
    return "\n\n".join(tidy(p.text) for p in paragraphs)


def _is_heading(text: str) -> bool:
    return len(text) <= _HEADING_MAX and not ends_sentence(text)


def _join_blocks(blocks: list[tuple[bool, str]]) -> str:
    out = ""
    previous_is_list = False
    for is_list, text in blocks:
        if out:
            out += "\n" if is_list and previous_is_list else "\n\n"
        out += text
        previous_is_list = is_list
    return out
