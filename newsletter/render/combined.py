"""What one combined digest carries: every owed issue's tailored items not yet received.

Pure: issues, the items a reader already received and their audience in; the selection out.
Items are named by `ItemKey` (issue slug, item id), since an item id is unique only within its
issue; the digest run maps the received-items ledger's rows to these keys.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from newsletter.content.model import Issue
from newsletter.tailor import Audience, Decision, Reason, Selection, select_items

ItemKey = tuple[str, str]  # (issue slug, item id)


@dataclass(frozen=True)
class IssuePart:
    """One owed issue in a combined digest.

    `selection` is `select_items(issue, audience)` exactly (the same rules as a single digest);
    `carried` are its included items the reader has not received, in the issue's order.
    """

    issue: Issue
    selection: Selection
    carried: tuple[str, ...]

    @property
    def left_out(self) -> tuple[str, ...]:
        """Items tailoring left out: listed under "also in these issues", linked to the web."""
        return self.selection.excluded

    def carried_selection(self) -> Selection:
        """The selection this mail renders: items already received count as not carried."""
        carried = set(self.carried)
        return Selection(
            decisions=tuple(
                d if d.item_id in carried or not d.included else _received(d)
                for d in self.selection.decisions
            ),
            interests=self.selection.interests,
        )


def _received(decision: Decision) -> Decision:
    return Decision(decision.item_id, decision.section, False, Reason.OUT)


@dataclass(frozen=True)
class CombinedSelection:
    """The owed issues in publication order, each with something new; none when nothing is owed."""

    parts: tuple[IssuePart, ...]

    @property
    def empty(self) -> bool:
        return not self.parts

    @property
    def single(self) -> bool:
        """One issue owed: the reader gets that issue's ordinary digest."""
        return len(self.parts) == 1

    @property
    def issues(self) -> tuple[Issue, ...]:
        return tuple(p.issue for p in self.parts)

    @property
    def carried(self) -> tuple[ItemKey, ...]:
        """Every item the mail carries, grouped by issue then in the issue's order."""
        return tuple((p.issue.slug, item_id) for p in self.parts for item_id in p.carried)

    @property
    def matched_sectors(self) -> tuple[str, ...]:
        """The reader's interests that brought in a carried item, in order of first appearance."""
        seen: dict[str, None] = {}
        for part in self.parts:
            carried = set(part.carried)
            for d in part.selection.decisions:
                if d.item_id in carried and d.reason is Reason.SECTOR:
                    seen.update(dict.fromkeys(d.matched))
        return tuple(seen)


def _order(issue: Issue) -> tuple[int, int, str]:
    return (issue.year, issue.number, issue.slug)


def combine(
    issues: Iterable[Issue], received: Collection[ItemKey], audience: Audience
) -> CombinedSelection:
    """Every issue owed to one reader, tailored, minus what they already received.

    An issue named twice counts once (by slug); an issue with nothing new for them is not owed.
    """
    unique = {issue.slug: issue for issue in issues}
    done = frozenset(received)
    parts = []
    for issue in sorted(unique.values(), key=_order):
        selection = select_items(issue, audience)
        carried = tuple(i for i in selection.included if (issue.slug, i) not in done)
        if carried:
            parts.append(IssuePart(issue, selection, carried))
    return CombinedSelection(tuple(parts))
