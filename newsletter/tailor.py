"""Which items a subscriber gets and why: pure functions over plain data."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from newsletter.content.model import Issue, Item


class Reason(StrEnum):
    ALWAYS = "always"  # the item is marked `always`
    GENERAL = "general"  # the item names no sector and no region
    SECTOR = "sector"  # the item shares a sector with the interests
    REGION = "region"  # the item names the embassy's country or region
    EVERYTHING = "no-interests"  # no interests at all: the whole issue
    OUT = "not-matched"  # none of the above


@dataclass(frozen=True)
class Audience:
    """What tailoring needs to know about one subscriber.

    `sectors` are the subscriber's own choices; `default_sectors` the embassy's, used when the
    subscriber chose none; `places` the embassy's ISO country code and any region codes.
    """

    sectors: frozenset[str] = frozenset()
    default_sectors: frozenset[str] = frozenset()
    places: frozenset[str] = frozenset()

    @property
    def interests(self) -> frozenset[str]:
        return self.sectors or self.default_sectors


@dataclass(frozen=True)
class Decision:
    item_id: str
    section: str
    included: bool
    reason: Reason
    matched: tuple[str, ...] = ()  # sector or region codes behind a SECTOR / REGION decision

    def explain(self) -> str:
        if self.reason is Reason.ALWAYS:
            return "included: marked for every reader"
        if self.reason is Reason.GENERAL:
            return "included: general item (no sectors, no regions)"
        if self.reason is Reason.SECTOR:
            return f"included: matches sectors {', '.join(self.matched)}"
        if self.reason is Reason.REGION:
            return f"included: names the embassy's region {', '.join(self.matched)}"
        if self.reason is Reason.EVERYTHING:
            return "included: no sector interests, so the whole issue"
        return "left out: no shared sector or region (listed under 'also in this issue')"


@dataclass(frozen=True)
class Selection:
    decisions: tuple[Decision, ...]
    interests: frozenset[str]

    @property
    def included(self) -> tuple[str, ...]:
        return tuple(d.item_id for d in self.decisions if d.included)

    @property
    def excluded(self) -> tuple[str, ...]:
        return tuple(d.item_id for d in self.decisions if not d.included)

    @property
    def matched_sectors(self) -> tuple[str, ...]:
        """Interests that brought in at least one item, in order of first appearance."""
        seen: dict[str, None] = {}
        for d in self.decisions:
            if d.reason is Reason.SECTOR:
                seen.update(dict.fromkeys(d.matched))
        return tuple(seen)

    @property
    def whole_issue(self) -> bool:
        return all(d.included for d in self.decisions)

    def key(self) -> str:
        """Equal for every subscriber who would read the same digest (before the language)."""
        # The interests too: the digest lists all of the reader's sectors, not only the matched.
        parts = "|".join(
            (
                ",".join(self.included),
                ",".join(self.matched_sectors),
                ",".join(sorted(self.interests)),
            )
        )
        return hashlib.blake2b(parts.encode(), digest_size=8).hexdigest()


def decide(item: Item, audience: Audience) -> Decision:
    """Why one item is in or out for one audience."""
    interests = audience.interests

    def made(reason: Reason, matched: Iterable[str] = ()) -> Decision:
        return Decision(item.id, item.section, reason is not Reason.OUT, reason, tuple(matched))

    if item.always:
        return made(Reason.ALWAYS)
    if not item.sectors and not item.regions:
        return made(Reason.GENERAL)
    if not interests:
        return made(Reason.EVERYTHING)
    shared = [code for code in item.sectors if code in interests]
    if shared:
        return made(Reason.SECTOR, shared)
    places = {p.lower() for p in audience.places}
    regions = [code for code in item.regions if code.lower() in places]
    if regions:
        return made(Reason.REGION, regions)
    return made(Reason.OUT)


def select_items(issue: Issue, audience: Audience) -> Selection:
    """The tailored selection of an issue for one audience, with a reason per item."""
    return Selection(
        decisions=tuple(decide(item, audience) for item in issue.items),
        interests=audience.interests,
    )


def profile_key(selection: Selection, language: str) -> str:
    """Subscribers sharing this key share one rendered digest."""
    return f"{selection.key()}-{language}"


class ProfileKeys:
    """`profile_key(select_items(issue, audience), language)` without building the selection.

    Planning a campaign keys every row before the first message leaves; a selection costs a
    Decision per item (about 60 µs for the sample issue), which a million rows cannot afford.
    Here an issue's items become bit masks once, and a reader's key is a few set lookups away.
    `tests/test_tailor.py` holds the two equal for any issue and audience.
    """

    def __init__(self, issue: Issue) -> None:
        items = issue.items
        self._ids = tuple(item.id for item in items)
        self._all = (1 << len(items)) - 1
        self._base = 0  # always and general items: in every digest
        self._by_sector: dict[str, int] = {}
        self._by_place: dict[str, int] = {}
        # Where a sector first brings in an item (item index, position among its sectors): the
        # order `Selection.matched_sectors` lists the interests in.
        self._rank: dict[str, tuple[int, int]] = {}
        for index, item in enumerate(items):
            bit = 1 << index
            if item.always or (not item.sectors and not item.regions):
                self._base |= bit
                continue
            for position, code in enumerate(item.sectors):
                self._by_sector[code] = self._by_sector.get(code, 0) | bit
                self._rank.setdefault(code, (index, position))
            for code in item.regions:
                self._by_place[code.lower()] = self._by_place.get(code.lower(), 0) | bit

    def key(self, audience: Audience, language: str) -> str:
        interests = audience.interests
        matched: tuple[str, ...] = ()
        if not interests:
            mask = self._all
        else:
            mask = self._base
            for code in interests:
                mask |= self._by_sector.get(code, 0)
            for place in audience.places:
                mask |= self._by_place.get(place.lower(), 0)
            rank = self._rank
            matched = tuple(sorted((c for c in interests if c in rank), key=rank.__getitem__))
        included = ",".join(i for n, i in enumerate(self._ids) if mask >> n & 1)
        parts = f"{included}|{','.join(matched)}|{','.join(sorted(interests))}"
        return f"{hashlib.blake2b(parts.encode(), digest_size=8).hexdigest()}-{language}"
