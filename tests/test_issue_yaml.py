"""The YAML issue format: the sample loads, round-trips, and bad files name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.content.issue_intake import sample_issue_path
from newsletter.content.issue_yaml import IssueFileError, dump_issue, load_issue
from newsletter.directory import bundled_data_dir, read_reference

CODES = {s.code for s in read_reference(bundled_data_dir()).sectors}
SAMPLE = sample_issue_path().read_text(encoding="utf-8")


def test_sample_issue_has_every_item_of_the_journal() -> None:
    issue = load_issue(SAMPLE, source="2020-01.yaml", sector_codes=CODES)
    counts = {s: len(issue.items_in(s)) for s in ("policy", "research", "parks", "demand", "focus")}
    assert counts == {"policy": 7, "research": 4, "parks": 4, "demand": 2, "focus": 1}
    assert issue.slug == "2020-01"
    focus = issue.items_in("focus")[0]
    assert focus.always
    assert [line[:5] for line in focus.body.splitlines() if line.startswith("## ")] == [
        "## 1.",
        "## 2.",
        "## 3.",
        "## 4.",
        "## 5.",
    ]
    assert all(item.sectors for item in issue.items)


def test_sample_round_trips_through_dump() -> None:
    issue = load_issue(SAMPLE, sector_codes=CODES)
    assert load_issue(dump_issue(issue), sector_codes=CODES) == issue


def _broken(old: str, new: str) -> str:
    assert old in SAMPLE
    return SAMPLE.replace(old, new, 1)


def _line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ("section: policy", "section: politics", "items[0].section", "unknown section 'politics'"),
        (
            "sectors: [innovation-policy,",
            "sectors: [quantum-gravity,",
            "items[0].sectors",
            "unknown sector",
        ),
        (
            "\n    title: 国务院《关于促进国家高新技术",
            "\n    titel: 国务院《关于促进国家高新技术",
            "items[0].titel",
            "unknown field",
        ),
        ("year: 2020", "year: twenty", "year", "whole number"),
        ("date: 2020-08-01", "date: 2020-13-01", "date", "not a date"),
    ],
)
def test_errors_name_file_line_and_field(old: str, new: str, field: str, words: str) -> None:
    text = _broken(old, new)
    with pytest.raises(IssueFileError) as caught:
        load_issue(text, source="issue.yaml", sector_codes=CODES)
    message = str(caught.value)
    assert message.startswith("issue.yaml:")
    assert field in message and words in message
    assert caught.value.line is not None and caught.value.line > 0


def test_duplicate_id_names_both_lines() -> None:
    issue = load_issue(SAMPLE, sector_codes=CODES)
    first, second = issue.items[0].id, issue.items[1].id
    second_line = _line_of(SAMPLE, f"id: {second}\n")
    text = SAMPLE.replace(f"id: {second}\n", f"id: {first}\n", 1)
    with pytest.raises(IssueFileError) as caught:
        load_issue(text, source="x.yaml")
    assert caught.value.line == second_line
    assert f"already used on line {_line_of(text, f'id: {first}')}" in str(caught.value)


def test_missing_title_is_reported_at_its_item() -> None:
    text = "publication: p\nyear: 2020\nnumber: 1\nitems:\n  - id: a\n    section: policy\n    body: x\n"
    with pytest.raises(IssueFileError, match=r"x.yaml:5: items\[0\].title: is missing"):
        load_issue(text, source="x.yaml")


@pytest.mark.parametrize("text", ["", "just words", "items: [", "- a\n- b\n"])
def test_not_an_issue_at_all(text: str) -> None:
    with pytest.raises(IssueFileError):
        load_issue(text, source="x.yaml")


def test_sample_ships_inside_the_package() -> None:
    assert sample_issue_path().is_relative_to(Path(__file__).resolve().parent.parent / "newsletter")
