"""CSV lists, pure: every bad row reported, naughty names round-trip, formula cells neutralised."""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from newsletter.subscriptions.lists import (
    ListRow,
    check_text,
    parse_list,
    reformula,
    unformula,
    write_list,
)

EMBASSIES = {"de-berlin", "fr-paris"}
SECTORS = {"ai", "biomedicine", "new-materials"}
NAUGHTY = [
    'Wang "Fang" O\'Neil',
    "<b>bold</b> & <i>co</i>",
    "<script>alert(1)</script>",
    "\u200fعمر حداد\u200f",
    "李伟 🚀👩\u200d🔬",
    "=1+1",
    "@SUM(A1)",
    "-2",
    "+1",
    "'quoted",
    "''=twice",
    '＝HYPERLINK("http://x")',
    "名" * 200,
]


def _parse(text: str, embassy: str | None = "de-berlin") -> tuple[list[ListRow], list[str]]:
    rows, errors = parse_list(
        text, source="list.csv", embassy=embassy, embassies=EMBASSIES, sectors=SECTORS
    )
    return rows, [str(e) for e in errors]


def _row(name: str, email: str = "a@example.org", **over: str) -> ListRow:
    fields = {"title": "科技参赞", "embassy": "de-berlin", "language": "zh", "status": ""} | over
    return ListRow(
        email, name, fields["title"], fields["embassy"], ("ai",), fields["language"],
        "list.csv", 0, fields["status"],
    )  # fmt: skip


def test_every_bad_row_is_reported_with_line_and_column() -> None:
    text = (
        "email,name,title,sectors,language\n"
        "good@example.org,好人,,ai,zh\n"
        "not-an-address,坏,,ai,zh\n"
        "x@example.org,X,,quantum-gravity,zh\n"
        "y@example.org,Y,,,fr\n"
        "z@example.org,Z\x07bell,,,zh\n"
        "good@example.org,Again,,,zh\n"
        "w@example.org,W,,,zh,extra\n"
        "v@example.org,\u202eevil,,,zh\n"
    )
    rows, errors = _parse(text)
    assert [r.email for r in rows] == ["good@example.org"]
    assert errors[0].startswith("list.csv:3: email: 'not-an-address'")
    assert errors[1].startswith("list.csv:4: sectors: unknown sector(s) quantum-gravity")
    assert errors[2].startswith("list.csv:5: language: 'fr'")
    assert errors[3] == "list.csv:6: name: name contains control or invisible formatting characters"
    assert errors[4] == "list.csv:7: email: good@example.org already on line 2"
    assert errors[5] == "list.csv:8: row: more cells than header columns"
    assert errors[6].startswith("list.csv:9: name:")
    assert len(errors) == 7


def test_a_mixed_file_needs_an_embassy_column_and_known_codes() -> None:
    _, errors = _parse("email,name\na@example.org,A\n", embassy=None)
    assert errors == [
        "list.csv:1: embassy: missing column(s) in the header; "
        "name the file <embassy-code>.csv or add an embassy column"
    ]
    rows, errors = _parse(
        "Email , EMBASSY\na@example.org,fr-paris\nb@example.org,xx-nowhere\n", embassy=None
    )
    assert [(r.email, r.embassy) for r in rows] == [("a@example.org", "fr-paris")]
    assert errors == [
        "list.csv:3: embassy: unknown embassy 'xx-nowhere'; see `newsletter embassies list`"
    ]


def test_an_embassy_column_that_contradicts_the_file_name_is_a_bad_row() -> None:
    _, errors = _parse("email,embassy\na@example.org,fr-paris\nb@example.org,de-berlin\n")
    assert errors == ["list.csv:2: embassy: 'fr-paris' differs from the file name (de-berlin)"]


def test_naughty_names_round_trip_exactly() -> None:
    rows = [_row(name, f"n{i}@example.org") for i, name in enumerate(NAUGHTY)]
    back, errors = _parse(write_list(rows, with_embassy=False))
    assert errors == []
    assert [r.name for r in back] == NAUGHTY


def test_exported_cells_never_start_a_formula() -> None:
    rows = [_row(name, f"n{i}@example.org", title=name) for i, name in enumerate(NAUGHTY)]
    cells = [
        c for record in csv.reader(io.StringIO(write_list(rows, with_embassy=True))) for c in record
    ]
    starts = ("=", "+", "-", "@", "\t", "\r", "＝", "＋", "－", "＠")
    assert not [c for c in cells if c.startswith(starts)]
    assert "'=1+1" in cells and "'@SUM(A1)" in cells and "'-2" in cells and "'+1" in cells


def test_names_over_the_limit_and_bidi_overrides_are_refused() -> None:
    assert check_text("名" * 201, "name") == "name is longer than 200 characters"
    assert check_text("a\u202eb", "name")
    assert check_text("a\u2066b\u2069", "name")
    assert check_text("line\u2028break", "name")
    assert check_text("عمر\u200f", "name") is None  # a right-to-left mark is part of a name


def test_status_column_round_trips_and_is_checked() -> None:
    rows = [_row("A", "a@example.org", status="unsubscribed"), _row("B", "b@example.org")]
    back, errors = _parse(write_list(rows, with_embassy=False))
    assert errors == [] and [r.status for r in back] == ["unsubscribed", ""]
    _, errors = _parse("email,status\nc@example.org,deleted\n")
    assert errors[0].startswith("list.csv:2: status: 'deleted'")


def test_broken_csv_is_a_reported_row_not_a_crash() -> None:
    _, errors = _parse('email,name\na@example.org,"unterminated\x00\n')
    assert errors and errors[0].startswith("list.csv:")


names = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp")), max_size=60
).map(str.strip)


@given(names)
def test_unformula_is_undone_by_reformula(cell: str) -> None:
    assert reformula(unformula(cell)) == cell


@given(st.lists(names, min_size=1, max_size=5))
def test_any_printable_name_survives_export_then_import(values: list[str]) -> None:
    rows = [_row(v, f"p{i}@example.org") for i, v in enumerate(values)]
    back, errors = _parse(write_list(rows, with_embassy=True), embassy=None)
    assert errors == []
    assert [r.name for r in back] == values


def test_a_column_named_twice_is_refused_naming_it() -> None:
    rows, errors = _parse("email,name,email\na@example.org,A,b@example.org\n")
    assert rows == []
    assert errors == [
        "list.csv:1: email: column 'email' appears twice in the header (columns 1 and 3); "
        "keep one and delete or rename the other"
    ]
    _, errors = _parse("Email,Name, NAME \na@example.org,A,B\n")
    assert errors[0].startswith("list.csv:1: name: column 'name' appears twice")
    # Unnamed columns (the trailing commas spreadsheets leave) are no duplicates.
    rows, errors = _parse("email,name,,\na@example.org,A,,\n")
    assert errors == [] and [r.name for r in rows] == ["A"]


def test_other_header_problems_are_one_clear_error() -> None:
    assert _parse("")[1] == [
        "list.csv:1: header: the file is empty or its first line names no columns; "
        "start it with email,name,title,sectors,language"
    ]
    _, errors = _parse("a@example.org,王芳\nb@example.org,李伟\n")
    assert errors == [
        "list.csv:1: header: the first line holds an address, not column names; add a header "
        "line such as email,name,title,sectors,language"
    ]
    _, errors = _parse("email,name,sector\na@example.org,A,ai\n")
    assert errors == [
        "list.csv:1: sector: unknown column 'sector': did you mean 'sectors'? Rename it, or its "
        "cells are lost"
    ]
    rows, errors = _parse("email,name,notes\na@example.org,A,met in Berlin\n")
    assert errors == [] and len(rows) == 1  # a column of staff's own is no problem


def test_idn_addresses_are_stored_in_one_form() -> None:
    rows, errors = _parse(
        "email,name\nKJC@使馆.中国,甲\nkjc@xn--2rqs81p.xn--fiqs8s,乙\nkjc@-使馆.中国,丙\n"
    )
    assert [r.email for r in rows] == ["kjc@使馆.中国"]
    assert errors[0] == "list.csv:3: email: kjc@使馆.中国 already on line 2"
    assert errors[1].startswith("list.csv:4: email: 'kjc@-使馆.中国' is not a valid email address:")
