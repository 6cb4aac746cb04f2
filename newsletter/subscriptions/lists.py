"""Per-embassy CSV lists: parse and validate rows (every bad row reported), and write exports."""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import re
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from newsletter import addresses
from newsletter.errors import ListImportError

LIST_COLUMNS = ("email", "name", "title", "sectors", "language")
# Exports add the status, so a list moved to another instance keeps who left; import reads it.
EXPORT_COLUMNS = (*LIST_COLUMNS, "status")
LANGUAGES = ("zh", "en")
STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
MAX_NAME = 200
# A leading character that makes a spreadsheet evaluate the cell (OWASP "CSV injection"), and the
# full-width forms a CJK input method types, which some spreadsheets also take as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "＝", "＋", "－", "＠")
# Invisible characters a real name may need: right-to-left and left-to-right marks (Arabic and
# Hebrew names), the Arabic letter mark, and the joiners inside Persian words and emoji sequences.
# Bidi embeddings, overrides and isolates stay refused: they can reorder what staff see.
_ALLOWED_FORMAT = frozenset("\u200e\u200f\u061c\u200c\u200d")


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
    status: str = ""  # "" when the list does not say; else one of STATUSES


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


def decode_list(data: bytes, *, source: str) -> tuple[str, str]:
    """(text, encoding name) of a list file: UTF-8 (with or without a BOM), else GB18030.

    GB18030 (a superset of GBK) is what Excel on Chinese Windows saves as plain "CSV"; a file in
    neither is refused with what to save instead, never read as mojibake.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ListImportError(
            f'{source}: UTF-16 text (Excel\'s "Unicode Text"), not CSV; save the list as '
            '"CSV UTF-8"'
        )
    bom = data.startswith(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8-sig"), "UTF-8 with BOM" if bom else "UTF-8"
    except UnicodeDecodeError as exc:
        if bom:
            raise ListImportError(
                f"{source}: starts as UTF-8 but byte {exc.start} is not UTF-8; save the list "
                'again as "CSV UTF-8"'
            ) from None
    try:
        return data.decode("gb18030"), "GB18030"
    except UnicodeDecodeError:
        raise ListImportError(
            f'{source}: neither UTF-8 nor GB18030/GBK text; save the list as "CSV UTF-8"'
        ) from None


def normalise_email(raw: str) -> str:
    """`addresses.normalise`, raising a ValueError that says only what is wrong.

    For callers that name the address in their own message; new code calls `addresses.normalise`.
    """
    try:
        return addresses.normalise(raw)
    except addresses.AddressError as exc:
        raise ValueError(exc.reason) from None


def _bad_char(ch: str) -> bool:
    category = unicodedata.category(ch)
    # Cc: controls; Zl/Zp: line and paragraph separators (a line break by another name);
    # Cs: lone surrogates, which no real text holds.
    return category in ("Cc", "Zl", "Zp", "Cs") or (category == "Cf" and ch not in _ALLOWED_FORMAT)


def unformula(cell: str) -> str:
    """Neutralise a cell a spreadsheet would run as a formula (reversible with `reformula`)."""
    return "'" + cell if cell.startswith(_FORMULA_START) or cell.startswith("'") else cell


def reformula(cell: str) -> str:
    return cell[1:] if cell.startswith("'") and cell[1:2] in (*_FORMULA_START, "'") else cell


def check_text(value: str, column: str, limit: int = MAX_NAME) -> str | None:
    """Why a free-text value (name, title) cannot be stored, or None when it can."""
    if any(_bad_char(ch) for ch in value):
        return f"{column} contains control or invisible formatting characters"
    if len(value) > limit:
        return f"{column} is longer than {limit} characters"
    return None


# Between sector codes: `;` as documented, `,` as `--sectors` takes them, and what a Chinese
# input method types in their place (full-width ；and ，, and the enumeration comma 、).
_SECTOR_SEPARATORS = re.compile(r"[;,；，、]")


def parse_sector_codes(cell: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.strip() for c in _SECTOR_SEPARATORS.split(cell) if c.strip()))


@dataclass(frozen=True)
class _Refs:
    source: str
    embassy: str | None
    embassies: Collection[str]
    sectors: Collection[str]


def _parse_record(cells: dict[str, str], line: int, refs: _Refs) -> ListRow | RowError:
    """One row, or the first thing wrong with it."""

    def bad(column: str, reason: str) -> RowError:
        return RowError(refs.source, line, column, reason)

    try:
        email = addresses.normalise(cells.get("email", ""))
    except addresses.AddressError as exc:
        return bad("email", str(exc))
    embassy = refs.embassy or cells.get("embassy", "")
    if refs.embassy and cells.get("embassy", "") not in ("", refs.embassy):
        return bad("embassy", f"{cells['embassy']!r} differs from the file name ({refs.embassy})")
    if embassy not in refs.embassies:
        return bad("embassy", f"unknown embassy {embassy!r}; see `newsletter embassies list`")
    codes = parse_sector_codes(cells.get("sectors", ""))
    unknown = [c for c in codes if c not in refs.sectors]
    if unknown:
        return bad(
            "sectors", f"unknown sector(s) {', '.join(unknown)}; see `newsletter sectors list`"
        )
    language = cells.get("language", "") or "zh"
    if language not in LANGUAGES:
        return bad("language", f"{language!r}: use zh or en")
    status = cells.get("status", "").lower()
    if status and status not in STATUSES:
        return bad("status", f"{status!r}: use one of {', '.join(STATUSES)} or leave it empty")
    for column in ("name", "title"):
        problem = check_text(cells.get(column, ""), column)
        if problem:
            return bad(column, problem)
    return ListRow(
        email, cells.get("name", ""), cells.get("title", ""), embassy, codes, language,
        refs.source, line, status,
    )  # fmt: skip


def _header(reader: csv.DictReader[str]) -> tuple[str, ...]:
    # Spreadsheets keep whatever case and spacing staff typed in the header row.
    names = tuple((name or "").strip().lower() for name in reader.fieldnames or ())
    reader.fieldnames = list(names)
    return names


def _header_problem(
    header: Sequence[str], required: Sequence[str], *, embassy: bool
) -> tuple[str, str] | None:
    """(column, why) the header row cannot be read as the columns of a list, or None."""
    example = ",".join(LIST_COLUMNS)
    if not any(header):
        return (
            "header",
            f"the file is empty or its first line names no columns; start it with {example}",
        )
    if any("@" in name for name in header):
        return "header", (
            f"the first line holds an address, not column names; add a header line such as {example}"
        )
    seen: dict[str, int] = {}
    for number, name in enumerate(header, 1):
        if not name:
            continue  # an unnamed column (trailing commas a spreadsheet adds) is ignored
        if name in seen:
            # A reader keeps only one of the two; which one the spreadsheet meant is unknowable.
            return name, (
                f"column {name!r} appears twice in the header (columns {seen[name]} and "
                f"{number}); keep one and delete or rename the other"
            )
        seen[name] = number
    known = (*EXPORT_COLUMNS, "embassy")
    for name in header:
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        if name and name not in known and near:
            # A misspelt column would be ignored and its values lost without a word.
            return (
                name,
                f"unknown column {name!r}: did you mean {near[0]!r}? Rename it, or its cells are lost",
            )
    missing = [c for c in required if c not in header]
    if missing:
        hint = "" if embassy else "; name the file <embassy-code>.csv or add an embassy column"
        return ",".join(missing), f"missing column(s) in the header{hint}"
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
    try:
        header = _header(reader)
    except csv.Error as exc:
        return [], [RowError(source, 1, "header", f"not a CSV header: {exc}")]
    required = ("email",) if embassy else ("email", "embassy")
    problem = _header_problem(header, required, embassy=embassy is not None)
    if problem is not None:
        return [], [RowError(source, 1, *problem)]
    refs = _Refs(source, embassy, embassies, sectors)
    rows: list[ListRow] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(RowError(source, reader.line_num, "row", f"not valid CSV: {exc}"))
            break
        line = reader.line_num
        if None in record:
            errors.append(RowError(source, line, "row", "more cells than header columns"))
            continue
        cells = {k: reformula((v or "").strip()) for k, v in record.items()}
        parsed = _parse_record(cells, line, refs)
        if isinstance(parsed, RowError):
            errors.append(parsed)
        elif parsed.email in seen:
            errors.append(
                RowError(
                    source, line, "email", f"{parsed.email} already on line {seen[parsed.email]}"
                )
            )
        else:
            seen[parsed.email] = line
            rows.append(parsed)
    return rows, errors


def write_list(rows: Iterable[ListRow], *, with_embassy: bool) -> str:
    """CSV text that `parse_list` reads back to the same rows; formula cells neutralised."""
    out = io.StringIO()
    columns = (*EXPORT_COLUMNS, "embassy") if with_embassy else EXPORT_COLUMNS
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = [row.email, row.name, row.title, ";".join(row.sectors), row.language, row.status]
        if with_embassy:
            cells.append(row.embassy)
        writer.writerow([unformula(c) for c in cells])
    return out.getvalue()
