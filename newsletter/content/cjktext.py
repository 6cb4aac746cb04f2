"""Chinese text repair: spacing around CJK, punctuation width, sentence ends, Chinese numerals."""

from __future__ import annotations

import re
import unicodedata

IDEOGRAPHS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# CJK punctuation (、。「」《》 …), full-width forms (，：（）), curly quotes, em dash, ellipsis.
CJK_PUNCT = (
    "\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65\u2018-\u201f\u2014\u2026"
)
_CJK = IDEOGRAPHS + CJK_PUNCT
_HAS_CJK = re.compile(f"[{_CJK}]")
_HALF_PARENS = re.compile(r"\(([^()]*)\)")
_HALF_COMMA = re.compile(rf"(?<=[{_CJK}])\s*,\s*|\s*,\s*(?=[{_CJK}])")
_SPACE_BY_PUNCT = re.compile(rf"\s+(?=[{CJK_PUNCT}])|(?<=[{CJK_PUNCT}])\s+")
# A number (2020, 6.2%, 5G, 4A) is set solid with the Chinese around it; a Latin word
# (LCD, UNNPs) keeps the space the editors gave it.
_SPACE_BETWEEN_IDEOGRAPHS = re.compile(rf"(?<=[{IDEOGRAPHS}])\s+(?=[{IDEOGRAPHS}])")
_SPACE_BEFORE_NUMBER = re.compile(rf"(?<=[{IDEOGRAPHS}])\s+(?=\d)")
_SPACE_AFTER_NUMBER = re.compile(rf"(?<![A-Za-z0-9._%])(\d[A-Za-z0-9._%‰℃]*)\s+(?=[{IDEOGRAPHS}])")
_SPACES = re.compile(r"\s+")
# Invisible characters PDF exports leave behind: zero-width spaces and joiners, soft hyphens.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
# Full-width digits and Latin letters (２０２０年) are the same characters as their ASCII forms.
_FULLWIDTH_ALNUM = {
    code: code - 0xFEE0
    for lo, hi in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A))
    for code in range(lo, hi + 1)
}
SENTENCE_FINAL = "。！？；…!?;.：:"
_CLOSERS = "”’」』）)》"

_NUMERALS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4}
_NUMERALS |= {"五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_UNITS = {"十": 10, "百": 100, "千": 1000}


def tidy(text: str) -> str:
    """One paragraph or title as the editors would type it: `2020 年 7 月` reads `2020年7月`.

    Half-width commas and brackets inside Chinese sentences become full-width (，（）) and lose
    their spaces; numbers are set solid; Latin words keep single spaces (`IEC TC100`, `LCD 多屏`);
    full-width digits and letters become ASCII.
    """
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE).translate(_FULLWIDTH_ALNUM)
    text = _SPACES.sub(" ", text).strip()
    text = _widen_parentheses(text)
    text = _HALF_COMMA.sub("，", text)
    text = _SPACE_BY_PUNCT.sub("", text)
    text = _SPACE_BETWEEN_IDEOGRAPHS.sub("", text)
    text = _SPACE_BEFORE_NUMBER.sub("", text)
    return _SPACE_AFTER_NUMBER.sub(r"\1", text)


def _widen_parentheses(text: str) -> str:
    """`粒子 (UNNPs), 实现` gets Chinese parentheses, （UNNPs）; English `(see below)` does not."""

    def widen(match: re.Match[str]) -> str:
        before = text[: match.start()].rstrip()[-1:]
        after = text[match.end() :].lstrip()[:1]
        if _HAS_CJK.search(before + match[1] + after):
            return f"（{match[1].strip()}）"
        return match.group()

    return _HALF_PARENS.sub(widen, text)


def ends_sentence(text: str) -> bool:
    """Whether a paragraph may end here; `“云栖小镇”` alone does not, `……。”` does.

    A colon counts as an end: in the journal it introduces a list or a new paragraph.
    """
    stripped = text.rstrip()
    bare = stripped.rstrip(_CLOSERS)
    if bare != stripped:
        return bool(bare) and bare[-1] in SENTENCE_FINAL
    return bool(stripped) and stripped[-1] in SENTENCE_FINAL


def join_pieces(first: str, second: str) -> str:
    """Join two pieces of one paragraph; only two Latin words need the space the line break ate."""
    first, second = first.rstrip(), second.lstrip()
    if first and second and _is_latin(first[-1]) and _is_latin(second[0]):
        return f"{first} {second}"
    return first + second


def compare_key(text: str) -> str:
    """A form for comparing titles that ignores spacing and the width of brackets and commas."""
    return _SPACES.sub("", unicodedata.normalize("NFKC", text))


def chinese_number(text: str) -> int:
    """`3`, `一` 1, `十二` 12, `二十一` 21, `一百零五` 105; ValueError for anything else."""
    text = text.strip().translate(_FULLWIDTH_ALNUM)
    if text.isascii() and text.isdigit():
        return int(text)
    if not text or any(ch not in _NUMERALS and ch not in _UNITS for ch in text):
        raise ValueError(f"not a number: {text!r}")
    if not any(ch in _UNITS for ch in text):
        # Digit by digit, as years are written: 二〇二〇.
        return int("".join(str(_NUMERALS[ch]) for ch in text))
    total, digit = 0, None
    for ch in text:
        if ch in _UNITS:
            total += (1 if digit is None else digit) * _UNITS[ch]
            digit = None
        else:
            digit = _NUMERALS[ch]
    return total + (digit or 0)


def _is_latin(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()
