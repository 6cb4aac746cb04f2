"""One door for issue files: YAML is loaded as is, the journal's plain text is converted first."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from newsletter.content.importer import Conversion, convert
from newsletter.content.issue_yaml import IssueFileError, load_issue, top_level_keys
from newsletter.content.model import Issue
from newsletter.taxonomy import SectorDef

SAMPLES = Path(__file__).parent / "samples"


def sample_issue_path() -> Path:
    """The hand-made sample issue shipped with the package."""
    return SAMPLES / "2020-01.yaml"


# The top-level keys of an issue file: a mapping that opens with one of them is an attempt at one.
ISSUE_KEYS = frozenset(
    {"publication", "title_en", "year", "number", "slug", "date", "intro", "organisers", "items",
     "contact", "disclaimer"}
)  # fmt: skip
YAML_SUFFIXES = (".yaml", ".yml")


def looks_like_issue_yaml(data: bytes, source: str = "") -> bool:
    """YAML by name (`.yaml`, `.yml`) or by shape (a mapping with an issue's keys).

    Shape is read as parser events, never built: building would construct values (a
    `2030-02-30` date, a 5,000-digit number) and recurse once per level of a crafted deep file.
    A file broken further down counts by the keys before the break, so a review that broke the
    YAML gets the YAML error, never the plain-text converter's "no sections found".
    """
    if source.lower().endswith(YAML_SUFFIXES):
        return True
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    return bool(ISSUE_KEYS & (top_level_keys(text) or set()))


def convert_text(data: bytes, *, source: str, taxonomy: Sequence[SectorDef]) -> Conversion:
    return convert(data, source=source, taxonomy=taxonomy)


def read_issue_file(
    data: bytes, *, source: str, taxonomy: Sequence[SectorDef]
) -> tuple[Issue, str, list[str]]:
    """The issue, its canonical YAML text, and warnings for staff (text imports only)."""
    codes = {s.code for s in taxonomy}
    if looks_like_issue_yaml(data, source):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise IssueFileError(
                source, None, "file", f"is not UTF-8 (byte {exc.start}); save it as UTF-8"
            ) from None
        return load_issue(text, source=source, sector_codes=codes), text, []
    conversion = convert_text(data, source=source, taxonomy=taxonomy)
    text = conversion.yaml
    # Re-load what we will store, so a stored issue always loads.
    issue = load_issue(text, source=f"{source} (converted)", sector_codes=codes)
    warnings = [f"{source}:{w.line}: {w.message}" for w in conversion.warnings]
    return issue, text, warnings
