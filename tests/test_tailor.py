"""Tailoring rules (DESIGN section 6) as properties over generated issues and audiences."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from newsletter.content.model import Issue, Item
from newsletter.tailor import Audience, ProfileKeys, Reason, profile_key, select_items

SECTORS = ["ai", "software", "biomedicine", "displays", "talent", "robotics"]
PLACES = ["DE", "US", "KR", "eu", "asean"]
codes = st.lists(st.sampled_from(SECTORS), max_size=3, unique=True).map(tuple)
places = st.lists(st.sampled_from(PLACES), max_size=2, unique=True).map(tuple)


@st.composite
def issues(draw: st.DrawFn) -> Issue:
    n = draw(st.integers(min_value=1, max_value=8))
    items = tuple(
        Item(
            id=f"item-{i}",
            section=draw(st.sampled_from(["policy", "research", "parks", "demand", "focus"])),
            title=f"标题{i}",
            body="正文。",
            sectors=draw(codes),
            regions=draw(places),
            always=draw(st.booleans()) and draw(st.booleans()),
        )
        for i in range(n)
    )
    return Issue(publication="中国科技创新速递", year=2020, number=1, items=items)


audiences = st.builds(
    Audience,
    sectors=codes.map(frozenset),
    default_sectors=codes.map(frozenset),
    places=places.map(frozenset),
)


@given(issues(), audiences)
def test_every_item_gets_exactly_one_decision_in_issue_order(
    issue: Issue, audience: Audience
) -> None:
    selection = select_items(issue, audience)
    assert [d.item_id for d in selection.decisions] == [i.id for i in issue.items]
    assert set(selection.included) | set(selection.excluded) == {i.id for i in issue.items}
    assert not set(selection.included) & set(selection.excluded)


@given(issues(), audiences)
def test_always_and_general_items_are_in_every_digest(issue: Issue, audience: Audience) -> None:
    selection = select_items(issue, audience)
    for item in issue.items:
        if item.always or (not item.sectors and not item.regions):
            assert item.id in selection.included


@given(issues(), audiences)
def test_an_item_is_in_iff_a_rule_lets_it_in(issue: Issue, audience: Audience) -> None:
    selection = select_items(issue, audience)
    interests = audience.sectors or audience.default_sectors
    lowered = {p.lower() for p in audience.places}
    for item in issue.items:
        expected = (
            item.always
            or (not item.sectors and not item.regions)
            or not interests
            or bool(set(item.sectors) & interests)
            or any(r.lower() in lowered for r in item.regions)
        )
        assert (item.id in selection.included) == expected


@given(issues(), codes, places)
def test_own_sectors_replace_the_embassy_defaults(
    issue: Issue, own: tuple[str, ...], where: tuple[str, ...]
) -> None:
    with_defaults = Audience(frozenset(own), frozenset({"talent", "ai"}), frozenset(where))
    without = Audience(frozenset(own), frozenset(), frozenset(where))
    if own:
        assert select_items(issue, with_defaults) == select_items(issue, without)


@given(issues(), st.sampled_from(PLACES))
def test_no_interests_means_the_whole_issue(issue: Issue, place: str) -> None:
    selection = select_items(issue, Audience(places=frozenset({place})))
    assert selection.whole_issue


@given(issues(), audiences, audiences)
def test_profile_key_equal_exactly_when_the_digest_is_the_same(
    issue: Issue, a: Audience, b: Audience
) -> None:
    sa, sb = select_items(issue, a), select_items(issue, b)
    same = (sa.included, sa.matched_sectors, sa.interests) == (
        sb.included, sb.matched_sectors, sb.interests,
    )  # fmt: skip
    assert (profile_key(sa, "zh") == profile_key(sb, "zh")) == same
    assert profile_key(sa, "zh") != profile_key(sa, "en")


@given(issues(), audiences, st.sampled_from(["zh", "en"]))
def test_the_fast_profile_key_is_the_selection_s_key(
    issue: Issue, audience: Audience, language: str
) -> None:
    assert ProfileKeys(issue).key(audience, language) == profile_key(
        select_items(issue, audience), language
    )


def test_reasons_name_what_matched() -> None:
    issue = Issue(
        publication="p", year=2020, number=1,
        items=(
            Item(id="chips", section="policy", title="t", body="b", sectors=("ai", "software")),
            Item(id="seoul", section="parks", title="t", body="b", sectors=("displays",), regions=("KR",)),
            Item(id="drugs", section="research", title="t", body="b", sectors=("biomedicine",)),
            Item(id="focus", section="focus", title="t", body="b", sectors=("talent",), always=True),
        ),
    )  # fmt: skip
    selection = select_items(issue, Audience(frozenset({"software"}), places=frozenset({"KR"})))
    by_id = {d.item_id: d for d in selection.decisions}
    assert by_id["chips"].reason is Reason.SECTOR and by_id["chips"].matched == ("software",)
    assert by_id["seoul"].reason is Reason.REGION and by_id["seoul"].matched == ("KR",)
    assert by_id["drugs"].reason is Reason.OUT and not by_id["drugs"].included
    assert by_id["focus"].reason is Reason.ALWAYS
    assert selection.matched_sectors == ("software",)
    assert "software" in by_id["chips"].explain()
