"""Per-embassy CSV lists: parse and validate rows (every bad row reported), and write exports."""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import ListImportError

LIST_COLUMNS = ("email", "name", "title", "sectors", "language")
LANGUAGES = ("zh", "en")
MAX_NAME = 200
# A leading character that makes a spreadsheet evaluate the cell.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ListRow:
    email: str
    name: str
    title: str
    embassy: str
    sectors: tuple[str, ...]
    language: str
    source: str
    line: int


@dataclass(frozen=True)
class RowError:
    source: str
    line: int
    column: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.column}: {self.reason}"


class BadRowsError(ListImportError):
    """Some rows are bad; nothing was imported. Carries every bad row."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        self.errors = tuple(errors)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(
            f"{errors[0]}{more}; nothing imported: fix the rows or pass --skip-invalid"
        )


def normalise_email(raw: str) -> str:
    """The address as stored: validated syntax, lowercased (one person, one row)."""
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


def _control_chars(text: str) -> bool:
    return any(unicodedata.category(ch) in {"Cc", "Cf"} and ch not in "\u200d" for ch in text)


def unformula(cell: str) -> str:
    """Neutralise a cell a spreadsheet would run as a formula (reversible with `reformula`)."""
    return "'" + cell if cell.startswith(_FORMULA_START) or cell.startswith("'") else cell


def reformula(cell: str) -> str:
    return cell[1:] if cell.startswith("'") and cell[1:2] in (*_FORMULA_START, "'") else cell


def _check_text(value: str, column: str, limit: int) -> str | None:
    if _control_chars(value):
        return f"{column} contains control or invisible formatting characters"
    if len(value) > limit:
        return f"{column} is longer than {limit} characters"
    return None


def parse_list(
    text: str,
    *,
    source: str,
    embassy: str | None,
    embassies: Collection[str],
    sectors: Collection[str],
) -> tuple[list[ListRow], list[RowError]]:
    """Rows and errors of one CSV list. `embassy` comes from the file name when it has one."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = tuple(reader.fieldnames or ())
    required = ("email",) if embassy else ("email", "embassy")
    missing = [c for c in required if c not in header]
    if missing:
        return [], [RowError(source, 1, ",".join(missing), "missing column(s) in the header")]
    rows: list[ListRow] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for record in reader:
        line = reader.line_num

        def bad(column: str, reason: str, line: int = line) -> None:
            errors.append(RowError(source, line, column, reason))

        if None in record:
            bad("row", "more cells than header columns")
            continue
        cells = {k: reformula((v or "").strip()) for k, v in record.items()}
        try:
            email = normalise_email(cells["email"])
        except ValueError as exc:
            bad("email", f"{cells['email']!r}: {exc}")
            continue
        if email in seen:
            bad("email", f"{email} already on line {seen[email]}")
            continue
        seen[email] = line
        row_embassy = embassy or cells.get("embassy", "")
        if row_embassy not in embassies:
            bad("embassy", f"unknown embassy {row_embassy!r}; see `newsletter embassies list`")
            continue
        codes = tuple(
            dict.fromkeys(c.strip() for c in cells.get("sectors", "").split(";") if c.strip())
        )
        unknown = [c for c in codes if c not in sectors]
        if unknown:
            bad("sectors", f"unknown sector(s) {', '.join(unknown)}; see `newsletter sectors list`")
            continue
        language = cells.get("language", "") or "zh"
        if language not in LANGUAGES:
            bad("language", f"{language!r}: use zh or en")
            continue
        problem = _check_text(cells.get("name", ""), "name", MAX_NAME) or _check_text(
            cells.get("title", ""), "title", MAX_NAME
        )
        if problem:
            bad(problem.split()[0], problem)
            continue
        rows.append(
            ListRow(
                email,
                cells.get("name", ""),
                cells.get("title", ""),
                row_embassy,
                codes,
                language,
                source,
                line,
            )
        )
    return rows, errors


def write_list(rows: Iterable[ListRow], *, with_embassy: bool) -> str:
    """CSV text that `parse_list` reads back to the same rows; formula cells neutralised."""
    out = io.StringIO()
    columns = (*LIST_COLUMNS, "embassy") if with_embassy else LIST_COLUMNS
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = [row.email, row.name, row.title, ";".join(row.sectors), row.language]
        if with_embassy:
            cells.append(row.embassy)
        writer.writerow([unformula(c) for c in cells])
    return out.getvalue()
