"""The text part's wrapper: display columns for Chinese and Latin text, 避头尾, URLs whole."""

from __future__ import annotations

import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from newsletter.render.textwrap_cjk import CLOSING, OPENING, wrap, wrap_text

URLS = (
    "https://www.gov.cn/zhengce/content/2020-08/04/content_5532370.htm",
    "http://www.cdht.gov.cn/cdhtz/c143045/2020-07/10/content_0e73e81e60164083b650af8f3f332f4d.shtml",
    "https://newsletter.example.org/archive/2020-01?lang=en#ic-software-policy",
)
PLACEHOLDER = "%%UNSUBSCRIBE_URL%%"


def columns(line: str) -> int:
    """Measured independently of the module: wide and full-width characters are two columns."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def visible(text: str) -> str:
    return "".join(text.split())


_han = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
_words = st.sampled_from(["AI", "5G", "2020", "MJML", "semiconductors", "R&D", "S&T", "Express"])
_pieces = st.one_of(
    st.text(_han, min_size=1, max_size=12),
    _words,
    st.sampled_from(sorted(CLOSING)),
    st.sampled_from(sorted(OPENING)),
    st.sampled_from([" ", "  ", "\u00a0", "\u3000"]),
    st.sampled_from(URLS),
    st.just(PLACEHOLDER),
)
texts = st.lists(_pieces, max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=texts, width=st.integers(min_value=8, max_value=90))
@example(text="中" * 40 + "，" + "文" * 40, width=72)
@example(text="见" + URLS[1] + "。", width=72)
def test_wrapping_keeps_every_character_in_order_within_the_width(text: str, width: int) -> None:
    lines = wrap(text, width)
    # Joining the lines gives back the text: only white space at the breaks is dropped.
    assert visible("".join(lines)) == visible(text)
    for index, line in enumerate(lines):
        if columns(line) > width:
            # Only a unit that cannot break is longer (a URL or a word, with the punctuation
            # that clings to it): even at one column it stays one line.
            assert wrap(line.strip(), 1) == [line.strip()], (line, lines)
            # Between two Chinese characters a line may always break: one at most is held.
            core = [c for c in line if c not in CLOSING | OPENING and not c.isspace()]
            assert sum(columns(c) == 2 for c in core) <= 1, (line, lines)
        if index and line:
            assert line[0] not in CLOSING, (line, lines)
        if index < len(lines) - 1 and line:
            assert line[-1] not in OPENING, (line, lines)


@settings(max_examples=200, deadline=None)
@given(text=texts, width=st.integers(min_value=8, max_value=90))
def test_urls_and_placeholders_are_never_split(text: str, width: int) -> None:
    lines = wrap(text, width, atoms={PLACEHOLDER: width})
    # Every URL and placeholder of the text is found whole on one line.
    count = sum(text.count(u) for u in (*URLS, PLACEHOLDER))
    assert sum(line.count(u) for line in lines for u in (*URLS, PLACEHOLDER)) == count


def test_a_chinese_paragraph_fills_lines_of_72_columns_and_keeps_punctuation_on_the_line() -> None:
    text = (
        "2020年7月，国务院印发《新时期促进集成电路产业和软件产业高质量发展的若干政策》，"
        "为进一步优化集成电路产业和软件产业发展环境，深化产业国际合作，提升产业创新能力和发展质量。"
    )
    lines = wrap(text, 72)
    assert len(lines) == 3
    assert all(columns(line) <= 72 for line in lines)
    assert all(columns(line) >= 68 for line in lines[:-1])  # filled, not ragged
    assert not any(line[0] in "，。、》" for line in lines)


def test_a_url_goes_to_a_line_of_its_own_rather_than_being_broken() -> None:
    lines = wrap(f"Source: {URLS[1]}", 72)
    assert lines == ["Source:", URLS[1]]


def test_list_items_continue_under_their_text() -> None:
    text = "  12. " + "国务院《关于促进国家高新技术产业开发区高质量发展的若干意见》" * 2
    lines = wrap_text(text, 72).split("\n")
    assert lines[0].startswith("  12. 国务院")
    assert all(line.startswith("      ") for line in lines[1:])
    assert all(columns(line) <= 72 for line in lines)


def test_a_placeholder_for_a_long_link_asks_for_a_line_of_its_own() -> None:
    assert (
        wrap_text(f"退订：{PLACEHOLDER}", 72, atoms={PLACEHOLDER: 72}) == f"退订：\n{PLACEHOLDER}"
    )
    # A short line without placeholders is returned as it is.
    assert wrap_text("本期共 18 篇。", 72, atoms={PLACEHOLDER: 72}) == "本期共 18 篇。"


def test_english_wraps_at_spaces_only() -> None:
    text = "You receive this because you subscribed to China S&T Innovation Express. " * 2
    lines = wrap(text.strip(), 40)
    assert all(columns(line) <= 40 for line in lines)
    assert " ".join(lines) == text.strip()
