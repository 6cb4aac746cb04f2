"""Hostile input at the doors staff use: each is one line naming what to fix, exit 1, no trace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import make_engine
from newsletter.models import IssueRecord
from tests.conftest import Instance

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = sample_issue_path().read_text(encoding="utf-8")
SEED = (ROOT / "tests" / "fixtures" / "kjcxsd-2020-01.txt").read_text(encoding="utf-8")
DISCLAIMER = next(line for line in SAMPLE.splitlines() if line.startswith("disclaimer:"))
FIRST_TITLE = "国务院《关于促进国家高新技术产业开发区高质量发展的若干意见》"


def invoke(runner: CliRunner, instance: Instance, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--config", str(instance.config), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stderr


def refused(runner: CliRunner, instance: Instance, *args: str) -> str:
    """The one line a refused command prints; it exits 1 without a traceback."""
    code, stderr = invoke(runner, instance, *args)
    assert code == 1, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def stored_slugs(instance: Instance) -> list[str]:
    engine = make_engine(instance.settings.resolved_database_url)
    with Session(engine) as session:
        slugs = list(session.exec(select(IssueRecord.slug)))
    engine.dispose()
    return slugs


def _item_yaml(field: str, value: str) -> str:
    """A small issue whose first item has `field` set to the YAML scalar `value`."""
    fields = {"title": '"标题"', "body": '"正文"', "summary": '"摘要"', "source": '"来源"'}
    fields[field] = value
    body = "".join(f"    {k}: {v}\n" for k, v in fields.items())
    return (
        "publication: 速递\nyear: 2020\nnumber: 1\nitems:\n"
        "  - id: first\n    section: policy\n    body: 一\n    title: 一\n"
        f"  - id: a7\n    section: policy\n{body}"
    )


@pytest.mark.parametrize(
    ("field", "value", "char"),
    [
        ("title", r'"标题\e[31m红"', "U+001B (ESC) at column 3"),
        ("summary", r'"摘要\b"', "U+0008 (BS) at column 3"),
        ("source", r'"http://x.example/\a"', "U+0007 (BEL) at column 18"),
        ("body", r'"第一段\n\n第二\0段"', "U+0000 (NUL) at line 3, column 3"),
        ("body", r'"C1 \x85 control"', "U+0085 at column 4"),
        ("title", r'"half \ud800"', "lone surrogate U+D800 at column 6"),
        ("summary", r'"not a char \ufffe"', "non-character U+FFFE at column 12"),
    ],
)
def test_control_characters_in_an_item_are_refused_by_name(
    runner: CliRunner, instance: Instance, tmp_path: Path, field: str, value: str, char: str
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(_item_yaml(field, value), encoding="utf-8")
    line = refused(runner, instance, "issue", "import", str(file))
    assert f"item 2 (a7) {field}: " in line and char in line and line.endswith("remove it")
    assert re.search(r"bad\.yaml:\d+: ", line)
    assert stored_slugs(instance) == []


def test_a_line_break_in_a_one_line_field_is_refused(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(_item_yaml("title", r'"new\nline"'), encoding="utf-8")
    line = refused(runner, instance, "issue", "import", str(file))
    assert line.endswith("item 2 (a7) title: line break at column 4; this field is one line")


def test_tab_and_newline_stay_allowed_in_paragraphs(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    file = tmp_path / "ok.yaml"
    file.write_text(_item_yaml("body", r'"第一段\n\n第二段\t后"'), encoding="utf-8")
    code, stderr = invoke(runner, instance, "issue", "import", str(file))
    assert code == 0, stderr
    assert stored_slugs(instance) == ["2020-01"]


def test_control_characters_in_issue_fields_are_refused(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    cases = {
        "publication: 中国科技创新速递": ('publication: "中国\\e科技"', "publication: control"),
        "{phone: 010-68515508,": ('{phone: "010\\a",', "contact.phone: control"),
        DISCLAIMER: ('disclaimer: "\\x9b免责声明"', "disclaimer: control"),
    }
    for old, (new, words) in cases.items():
        assert old in SAMPLE, old
        file = tmp_path / "bad.yaml"
        file.write_text(SAMPLE.replace(old, new, 1), encoding="utf-8")
        assert words in refused(runner, instance, "issue", "import", str(file))
    assert stored_slugs(instance) == []


def test_control_characters_in_a_text_export_name_line_and_column(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    lines = SEED.split("\n")
    number = next(i for i, line in enumerate(lines) if line.startswith("2020年7月，国务院印发")) + 1
    lines[number - 1] = lines[number - 1][:7] + "\x1b[31m" + lines[number - 1][7:]
    file = tmp_path / "export.txt"
    file.write_text("\n".join(lines), encoding="utf-8")
    line = refused(runner, instance, "issue", "import", str(file))
    assert line == (
        f"error: {file}:{number}: control character U+001B (ESC) at column 8; remove it"
    )
    assert "U+001B" in refused(runner, instance, "issue", "convert", str(file))
    assert stored_slugs(instance) == []
    # Page breaks (form feeds) of a PDF text export are not refused.
    file.write_text(SEED.replace("\n\n动态 NEWS\n", "\n\f\n动态 NEWS\n", 1), encoding="utf-8")
    assert invoke(runner, instance, "issue", "import", str(file))[0] == 0


def test_an_issue_stored_before_the_check_gives_one_line_not_a_traceback(
    runner: CliRunner, instance: Instance
) -> None:
    assert invoke(runner, instance, "issue", "import", str(sample_issue_path()))[0] == 0
    engine = make_engine(instance.settings.resolved_database_url)
    with Session(engine) as session:
        # As an import before this check could store it: YAML escapes are plain ASCII.
        bad = SAMPLE.replace(f"title: {FIRST_TITLE}", f'title: "{FIRST_TITLE}\\e[31m"', 1)
        assert bad != SAMPLE
        session.execute(update(IssueRecord).values(source_yaml=bad))
        session.commit()
    engine.dispose()
    line = refused(runner, instance, "issue", "show", "2020-01")
    assert "item 1 (hightech-zones-opinions) title: control character U+001B" in line
    assert "newsletter issue import" in line
    # The corrected file replaces it (nothing was sent).
    assert invoke(runner, instance, "issue", "import", str(sample_issue_path()))[0] == 0
    code, _ = invoke(runner, instance, "issue", "show", "2020-01", "--json")
    assert code == 0


def _with(old: str, new: str) -> str:
    assert old in SAMPLE, old
    return SAMPLE.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (SAMPLE + "intro: " + "[" * 50_000 + "]" * 50_000 + "\n", "intro: lists or mappings"),
        (_with("title_en:", "title_en: " + "{a: " * 50_000 + "}" * 50_000 + "\nx:"), "title_en:"),
        (_with("\nitems:\n", "\nitems:\n" + "  - " * 5_000 + "x\n"), "items: lists or mappings"),
        (_with("year: 2020", "year: " + "9" * 5_000), "year: must be from 1900 to 2999"),
        (_with("year: 2020", "year: 100000000000000000000"), "year: must be from 1900 to 2999"),
        (_with("number: 1", "number: 0"), "number: must be from 1 to 999"),
        (_with("date: 2020-08-01", "date: 2030-02-30"), "date: '2030-02-30' is not a date (day"),
        (_with("date: 2020-08-01", "date: 2020-08-01T25:00"), "date: '2020-08-01T25:00' is not"),
        ("items: [1]\nitems: [2]\n", "items: appears twice"),
        (_with("year: 2020", "year: 2020\n  bad: [indent"), "YAML syntax error: "),
    ],
    ids=[
        "deep-lists",
        "deep-maps",
        "deep-block",
        "5000-digit-year",
        "1e20-year",
        "number-0",
        "feb-30",
        "hour-25",
        "twice",
        "broken-yaml",
    ],  # fmt: skip
)
def test_crafted_yaml_gets_one_line_naming_the_field(
    runner: CliRunner, instance: Instance, tmp_path: Path, text: str, words: str
) -> None:
    file = tmp_path / "issue.yaml"
    file.write_text(text, encoding="utf-8")
    line = refused(runner, instance, "issue", "import", str(file))
    assert line.startswith(f"error: {file}:") and words in line, line
    assert len(line) < 300
    assert stored_slugs(instance) == []


def test_a_text_export_with_an_impossible_date_names_its_line(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    file = tmp_path / "export.txt"
    file.write_text(SEED.replace("2020年 第一期", "2020年 第一期\n出版日期：2030年2月30日", 1))
    line = refused(runner, instance, "issue", "import", str(file))
    assert line.startswith(f"error: {file}:6: '2030年2月30日' is not a date (day is out of")
    assert stored_slugs(instance) == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--at", "9999-12-31T23:59:59Z"], "--at '9999-12-31T23:59:59+00:00': is more than 10"),
        (["--at", "0001-01-01T00:00:00+05:00"], "has already passed"),
        (["--date", "9999-12-31"], "--date '9999-12-31': is more than 10 years ahead"),
        (["--date", "0001-01-01"], "09:00 on 0001-01-01 has already passed"),
        (["--at", "2030-02-30T09:00Z"], "--at '2030-02-30T09:00Z': give an ISO 8601 time"),
    ],
)
def test_schedule_times_out_of_range_get_one_line(
    runner: CliRunner, instance: Instance, args: list[str], words: str
) -> None:
    assert invoke(runner, instance, "issue", "import", str(sample_issue_path()))[0] == 0
    assert invoke(runner, instance, "subscribers", "add", "a@example.org",
                  "--embassy", "de-berlin")[0] == 0  # fmt: skip
    line = refused(runner, instance, "schedule", "2020-01", *args)
    assert words in line, line
    code, _ = invoke(runner, instance, "schedule", "list", "--json")
    assert code == 0


@pytest.mark.parametrize("cron", ["0 9 31 2 *", "0 9 30 2 *", "0 9 31 4 *", "0 0 31 6,9,11 *"])
def test_a_cron_that_can_never_fire_is_refused(
    runner: CliRunner, instance: Instance, cron: str
) -> None:
    line = refused(runner, instance, "digest", "schedule", "--cron", cron)
    assert f"--cron '{cron}': never fires in the next 10 years" in line
    code, stderr = invoke(runner, instance, "digest", "list", "--json")
    assert code == 0
    result = runner.invoke(app, ["--config", str(instance.config), "digest", "list", "--json"])
    assert result.stdout.strip() == "[]"


def test_a_leap_day_cron_is_accepted(runner: CliRunner, instance: Instance) -> None:
    code, stderr = invoke(runner, instance, "digest", "schedule", "--cron", "0 9 29 2 *")
    assert code == 0, stderr
