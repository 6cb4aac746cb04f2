"""A combined digest: every issue owed to a reader in one mail, each item once, within budget."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from newsletter import directory
from newsletter.content.issue_yaml import load_issue
from newsletter.content.model import SECTIONS, Issue, Item
from newsletter.interests import sectors_of
from newsletter.models import Subscriber, utcnow
from newsletter.render import HTML_LIMIT, DigestLinks, Recipient, make_environment, personalise
from newsletter.render.combined import CombinedSelection, ItemKey, combine
from newsletter.render.combined_digest import render_combined, span_label
from newsletter.render.digest import render_digest
from newsletter.scheduling import digests
from newsletter.scheduling.combined_owed import owed_combined
from newsletter.tailor import Audience, select_items
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance, cli, database, load_sample

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "newsletter" / "content" / "samples" / "2020-01.yaml"
BASE = "https://newsletter.example.org"
LINKS = DigestLinks(BASE)
ENV = make_environment()
AI = Audience(sectors=frozenset({"ai"}))

SECTORS = ("ai", "software", "biomedicine", "robotics")
PLACES = ("DE", "FR", "eu")
item_st = st.builds(
    Item,
    id=st.sampled_from([f"i{n}" for n in range(8)]),
    section=st.sampled_from([s.code for s in SECTIONS]),
    title=st.just("t"),
    body=st.just("b"),
    sectors=st.lists(st.sampled_from(SECTORS), max_size=2, unique=True).map(tuple),
    regions=st.lists(st.sampled_from(PLACES), max_size=1).map(tuple),
    always=st.booleans(),
)


@st.composite
def issues_st(draw: st.DrawFn) -> list[Issue]:
    """Up to four issues (an issue may be named twice), item ids unique within each."""
    keys = draw(st.lists(st.tuples(st.sampled_from([2019, 2020]), st.integers(1, 4)), max_size=4))
    out = []
    for year, number in keys:
        items = draw(st.lists(item_st, max_size=6, unique_by=lambda i: i.id))
        out.append(Issue(publication="速递", year=year, number=number, items=tuple(items)))
    return out


audience_st = st.builds(
    Audience,
    sectors=st.frozensets(st.sampled_from(SECTORS), max_size=2),
    default_sectors=st.frozensets(st.sampled_from(SECTORS), max_size=1),
    places=st.frozensets(st.sampled_from(PLACES), max_size=1),
)


@st.composite
def case_st(draw: st.DrawFn) -> tuple[list[Issue], frozenset[ItemKey], Audience]:
    issues = draw(issues_st())
    every = sorted({(i.slug, item.id) for i in issues for item in i.items})
    received = draw(st.frozensets(st.sampled_from(every))) if every else frozenset()
    return issues, received, draw(audience_st)


def _owed(issues: list[Issue], received: frozenset[ItemKey], who: Audience) -> set[ItemKey]:
    by_slug = {i.slug: i for i in issues}
    return {
        (slug, item_id)
        for slug, issue in by_slug.items()
        for item_id in select_items(issue, who).included
        if (slug, item_id) not in received
    }


@settings(max_examples=300, deadline=None)
@given(case_st())
def test_combine_carries_each_owed_item_once_and_nothing_received(
    case: tuple[list[Issue], frozenset[ItemKey], Audience],
) -> None:
    issues, received, who = case
    combined = combine(issues, received, who)
    carried = combined.carried
    assert len(carried) == len(set(carried))  # at most once
    assert not set(carried) & received  # nothing already received
    assert set(carried) == _owed(issues, received, who)  # everything owed
    assert combined.empty == (not carried)
    assert all(part.carried for part in combined.parts)  # no issue with nothing new


@settings(max_examples=300, deadline=None)
@given(case_st())
def test_combine_groups_by_issue_then_section_and_tailors_as_select_items(
    case: tuple[list[Issue], frozenset[ItemKey], Audience],
) -> None:
    issues, received, who = case
    combined = combine(issues, received, who)
    order = [(p.issue.year, p.issue.number) for p in combined.parts]
    assert order == sorted(set(order))  # publication order, each issue once
    slugs = [slug for slug, _ in combined.carried]
    assert slugs == sorted(slugs, key=[p.issue.slug for p in combined.parts].index)
    for part in combined.parts:
        assert part.selection == select_items(part.issue, who)
        assert list(part.carried) == [
            i for i in part.selection.included if (part.issue.slug, i) not in received
        ]
        # What this mail renders: the carried items and nothing else of the issue.
        assert part.carried_selection().included == part.carried


def _sample() -> Issue:
    return load_issue(SAMPLE.read_text(encoding="utf-8"))


def _second(issue: Issue, number: int = 2) -> Issue:
    """Another issue: its own item ids and titles, so each can be found in the mail."""
    items = tuple(
        replace(i, id=f"n{number}-{i.id}", title=f"{i.title}（第{number}期）") for i in issue.items
    )
    return replace(issue, number=number, items=items)


def test_span_label_names_the_issues_and_never_a_missing_one() -> None:
    one, two, three = _sample(), _second(_sample()), _second(_sample(), 3)
    assert span_label([two, one], "zh") == "2020年第1-2期"
    assert span_label([one, two], "en") == "2020 Nos. 1-2"
    assert span_label([one, three], "zh") == "2020年第1、3期"
    assert span_label([one, three], "en") == "2020 Nos. 1, 3"
    assert span_label([one, two, three], "en") == "2020 Nos. 1-3"
    december = replace(one, year=2019, number=12)
    assert span_label([december, one], "zh") == "2019年第12期、2020年第1期"
    assert span_label([december, one], "en") == "2019 No. 12; 2020 No. 1"


def _rendered(combined: CombinedSelection, language: str = "zh") -> tuple[str, str, str]:
    digest = render_combined(combined, language=language, sectors={}, links=LINKS, env=ENV)
    reader = Recipient("王参赞", f"{BASE}/unsubscribe/x", f"{BASE}/preferences/x", read_token="tok")
    mail = personalise(digest, reader)
    return digest.subject, mail.html, mail.text


def test_two_owed_issues_are_one_mail_grouped_by_issue_each_item_once() -> None:
    first, second = _sample(), _second(_sample())
    already = select_items(first, AI).included[0]
    combined = combine([second, first], {(first.slug, already)}, AI)
    subject, html, text = _rendered(combined)

    assert "2020年第1-2期" in subject
    assert "%%" not in html and "%%" not in text
    assert len(html.encode()) <= HTML_LIMIT
    titles = {i.id: i.title for issue in (first, second) for i in issue.items}
    received_title = titles[already]
    # (The second issue's titles extend the first's, so whole titles are matched.)
    assert f">{received_title}<" not in html and f". {received_title}\r\n" not in text
    positions = []
    for slug, item_id in combined.carried:
        anchor = f'id="{slug}-{item_id}"'
        assert html.count(anchor) == 1, item_id  # each carried item once
        assert text.count(f". {titles[item_id]}\r\n") == 2, item_id  # contents, then the item
        positions.append(html.index(anchor))
    assert positions == sorted(positions)  # issue by issue, each in its section order
    heading = re.search(r"2020年第2期[^<]*</h2>", html)
    assert heading is not None
    second_heading = heading.start()
    assert max(positions[: len(combined.parts[0].carried)]) < second_heading < positions[-1]
    # What tailoring left out is listed, linked to its issue's web version.
    left_out = combined.parts[1].left_out[0]
    assert f"{BASE}/archive/2020-02#{left_out}" in html
    assert "这几期的其他内容" in html
    # A demand item can be answered from the combined mail as from its own issue's.
    demand = next(k for k in combined.carried if k[1] == "beijing-application-scenarios")
    connect = f"{BASE}/connect/{demand[0]}/{demand[1]}/"
    assert html.count(connect) == 1 and text.count(connect) == 1


def test_an_english_reader_gets_the_span_in_english() -> None:
    subject, html, text = _rendered(combine([_sample(), _second(_sample())], (), AI), "en")
    assert "2020 Nos. 1-2" in subject
    assert "Also in these issues" in html and "since your last digest" in text


def test_one_owed_issue_is_the_ordinary_digest() -> None:
    first, second = _sample(), _second(_sample())
    # Everything of the first issue already received: only the second is owed.
    received = {(first.slug, i.id) for i in first.items}
    combined = combine([first, second], received, AI)
    assert combined.single
    ordinary = render_digest(
        second, select_items(second, AI), language="zh", sectors={}, links=LINKS, env=ENV
    )
    assert render_combined(combined, language="zh", sectors={}, links=LINKS, env=ENV) == ordinary


def test_nothing_owed_renders_nothing() -> None:
    first = _sample()
    combined = combine([first], {(first.slug, i.id) for i in first.items}, AI)
    assert combined.empty
    with pytest.raises(ValueError, match="nothing is owed"):
        render_combined(combined, language="zh", sectors={}, links=LINKS, env=ENV)


def test_several_long_issues_are_cut_at_a_paragraph_with_a_link_to_the_web_version() -> None:
    paragraphs = "\n\n".join(f"第{n}段。" + "内容" * 400 for n in range(12))
    long = [
        replace(issue, items=tuple(replace(i, body=paragraphs) for i in issue.items))
        for issue in (_sample(), _second(_sample()), _second(_sample(), 3))
    ]
    combined = combine(long, (), Audience())  # no interests: every item of all three
    digest = render_combined(combined, language="zh", sectors={}, links=LINKS, env=ENV)
    assert len(digest.html.encode()) <= HTML_LIMIT
    assert digest.cut_items
    for cut in digest.cut_items:
        slug, item_id = cut.split("#")
        assert f'href="{BASE}/archive/{slug}#{item_id}"' in digest.html  # read the rest
    # Every item is still there, each once, cut or not.
    for slug, item_id in combined.carried:
        assert digest.html.count(f'id="{slug}-{item_id}"') == 1
    assert re.search(r"2020年第1-3期", digest.subject)


# --- read from the database: what a weekly reader is owed -------------------------------------

WEEKLY = "chen.hao@de-berlin.example.org"


def test_a_weekly_reader_is_owed_both_issues_and_an_each_reader_nothing(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("NEWSLETTER_TRANSPORT", "smtp")
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(smtp_server.port))
    active = load_sample(runner, instance)
    second = tmp_path / "2020-02.yaml"
    second.write_text(
        SAMPLE.read_text(encoding="utf-8").replace("\nnumber: 1\n", "\nnumber: 2\n", 1),
        encoding="utf-8",
    )
    cli(runner, instance, "issue", "import", str(second))
    cli(runner, instance, "subscribers", "edit", WEEKLY, "--mode", "weekly", "--weekday", "MON")
    send = ("--transport", "smtp", "--smtp-host", "127.0.0.1", "--smtp-port",
            str(smtp_server.port))  # fmt: skip
    cli(runner, instance, "send", "2020-01", *send)
    cli(runner, instance, "send", "2020-02", *send)
    each = next(a for a in sorted(active) if a != WEEKLY)
    with database(instance) as db, Session(db) as session:
        ids = {
            s.email: s.id or 0
            for s in session.exec(
                select(Subscriber).where(col(Subscriber.email).in_([WEEKLY, each]))
            )
        }
        digests.record_received(session, now=utcnow())
        owed = owed_combined(session, [ids[WEEKLY], ids[each]], now=utcnow())
        berlin = directory.embassies(session).get("de-berlin")
        who = digests.audience(berlin, sectors_of(session, [ids[WEEKLY]]).get(ids[WEEKLY], ()))
    weekly = owed[ids[WEEKLY]]
    assert [p.issue.slug for p in weekly.parts] == ["2020-01", "2020-02"]
    for part in weekly.parts:
        assert part.carried == select_items(part.issue, who).included
    assert owed[ids[each]].empty  # both issues reached them already, and are in the ledger
    digest = render_combined(weekly, language="zh", sectors={}, links=LINKS, env=ENV)
    assert "2020年第1-2期" in digest.subject
