"""Suggested sector tags (taxonomy keywords) and regions (country names) for an item's text."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from newsletter.taxonomy import SectorDef

# Chinese names of countries and regions as the journal writes them, to ISO codes and to the region
# codes of subscribers/embassies.csv (eu, asean, au, gcc, un). 欧美 (Europe and America) names
# both, so that the embassy in Washington sees the item as well as those in Europe.
PLACES: dict[str, tuple[str, ...]] = {
    "美国": ("US",), "日本": ("JP",), "韩国": ("KR",), "德国": ("DE",), "英国": ("GB",),
    "法国": ("FR",), "俄罗斯": ("RU",), "印度": ("IN",), "以色列": ("IL",), "新加坡": ("SG",),
    "澳大利亚": ("AU",), "加拿大": ("CA",), "意大利": ("IT",), "西班牙": ("ES",), "荷兰": ("NL",),
    "瑞士": ("CH",), "瑞典": ("SE",), "芬兰": ("FI",), "丹麦": ("DK",), "挪威": ("NO",),
    "比利时": ("BE",), "奥地利": ("AT",), "波兰": ("PL",), "爱尔兰": ("IE",), "葡萄牙": ("PT",),
    "希腊": ("GR",), "捷克": ("CZ",), "匈牙利": ("HU",), "新西兰": ("NZ",), "巴西": ("BR",),
    "阿根廷": ("AR",), "墨西哥": ("MX",), "智利": ("CL",), "南非": ("ZA",), "埃及": ("EG",),
    "沙特阿拉伯": ("SA",), "沙特": ("SA",), "阿联酋": ("AE",), "土耳其": ("TR",), "伊朗": ("IR",),
    "泰国": ("TH",), "越南": ("VN",), "马来西亚": ("MY",), "印度尼西亚": ("ID",), "印尼": ("ID",),
    "菲律宾": ("PH",), "巴基斯坦": ("PK",), "哈萨克斯坦": ("KZ",), "蒙古国": ("MN",),
    "乌克兰": ("UA",), "白俄罗斯": ("BY",), "塞尔维亚": ("RS",), "尼日利亚": ("NG",),
    "肯尼亚": ("KE",), "埃塞俄比亚": ("ET",), "斯里兰卡": ("LK",), "孟加拉国": ("BD",),
    "欧洲": ("eu",), "欧盟": ("eu",), "欧美": ("eu", "US"),
    "东南亚": ("asean",), "东盟": ("asean",),
    "非洲": ("au",), "非盟": ("au",), "海湾国家": ("gcc",), "海合会": ("gcc",),
    "联合国": ("un",),
}  # fmt: skip
# Longest names first, so that 印度尼西亚 is not read as 印度 and 欧美国家 not as 美国.
_PLACE_RE = re.compile("|".join(sorted(map(re.escape, PLACES), key=len, reverse=True)))


@dataclass(frozen=True)
class Suggestion:
    """A code to tag an item with, and the note that tells staff why."""

    code: str
    note: str
    hits: int


@dataclass(frozen=True)
class SectorSuggestions:
    """Sectors the text names (tags), and weaker candidates staff may add (comments only)."""

    tags: tuple[Suggestion, ...]
    candidates: tuple[Suggestion, ...]


_NAME_PARTS = re.compile(r"\s*(?:与|和|及|、|&|,|\band\b)\s*")


def name_parts(sector: SectorDef) -> frozenset[str]:
    """The sector's own names, word by word: 大数据与云计算 -> 大数据, 云计算 (lower case)."""
    parts = {*_NAME_PARTS.split(sector.zh), *_NAME_PARTS.split(sector.en)}
    return frozenset(p.strip().lower() for p in (sector.zh, sector.en, *parts) if p.strip())


def named(counts: Counter[str], sector: SectorDef) -> bool:
    """Whether the hits show the text is about the sector, not that it brushes past it.

    The text names the sector when one of its own names occurs, or when its keywords occur
    more than once (one repeated, or two different ones). A single passing hit of one other
    keyword (行动方案 in a list of projects) is only a candidate.
    """
    names = name_parts(sector)
    return sum(counts.values()) > 1 or any(word.lower() in names for word in counts)


def suggest_sectors(text: str, taxonomy: Sequence[SectorDef]) -> SectorSuggestions:
    """Every sector the text names (no cap: a cap hid 人工智能 and 大数据 from their readers),
    and the weaker candidates; each most hits first, ties in taxonomy order.

    When the text names none, the candidates are the tags: an item without sectors would go
    to every reader.
    """
    tags: list[tuple[int, int, Suggestion]] = []
    candidates: list[tuple[int, int, Suggestion]] = []
    for order, sector in enumerate(taxonomy):
        counts = _keyword_counts(text, sector.keywords)
        if counts:
            hits = sum(counts.values())
            found = (-hits, order, Suggestion(sector.code, _note("keyword", counts), hits))
            (tags if named(counts, sector) else candidates).append(found)
    if not tags:
        # An item with no sector goes to every reader: weak matches still narrow it better.
        tags, candidates = candidates, []
    return SectorSuggestions(
        tuple(s for _, _, s in sorted(tags)), tuple(s for _, _, s in sorted(candidates))
    )


def find_regions(text: str) -> tuple[Suggestion, ...]:
    """Country and region codes for the places `text` names, in the order they first appear."""
    names: dict[str, Counter[str]] = {}
    for match in _PLACE_RE.finditer(text):
        for code in PLACES[match.group()]:
            names.setdefault(code, Counter())[match.group()] += 1
    return tuple(Suggestion(code, _note("named", c), sum(c.values())) for code, c in names.items())


def _keyword_counts(text: str, keywords: Iterable[str]) -> Counter[str]:
    """Non-overlapping hits; where keywords overlap (智能, 人工智能) the longest one counts."""
    words = sorted({k for k in keywords if k}, key=len, reverse=True)
    if not words:
        return Counter()
    pattern = re.compile("|".join(_keyword_pattern(w) for w in words), re.IGNORECASE)
    by_lower = {w.lower(): w for w in words}
    return Counter(by_lower[m.group().lower()] for m in pattern.finditer(text))


def _keyword_pattern(word: str) -> str:
    # Latin keywords (AI, 5G) must stand alone: AI is no hit inside "MAIL".
    if word.isascii():
        return rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])"
    return re.escape(word)


def _note(label: str, counts: Counter[str]) -> str:
    parts = ", ".join(f"{word} ({n}×)" for word, n in counts.most_common())
    if label == "keyword" and len(counts) > 1:
        label = "keywords"
    return f"{label}: {parts}"
