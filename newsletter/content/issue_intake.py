"""One door for issue files: YAML is loaded as is, the journal's plain text is converted first."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from newsletter.content.importer import Conversion, convert
from newsletter.content.issue_yaml import load_issue, top_level_keys
from newsletter.content.model import Issue
from newsletter.taxonomy import SectorDef

SAMPLES = Path(__file__).parent / "samples"


def sample_issue_path() -> Path:
    """The hand-made sample issue shipped with the package."""
    return SAMPLES / "2020-01.yaml"


def looks_like_issue_yaml(data: bytes) -> bool:
    """Chosen by content, not by file name: a YAML mapping with `items` is an issue file.

    Read as parser events, never built: building would construct values (a `2030-02-30`
    date, a 5,000-digit number) and recurse once per level of a crafted deep file.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    return "items" in (top_level_keys(text) or ())


def convert_text(data: bytes, *, source: str, taxonomy: Sequence[SectorDef]) -> Conversion:
    return convert(data, source=source, taxonomy=taxonomy)


def read_issue_file(
    data: bytes, *, source: str, taxonomy: Sequence[SectorDef]
) -> tuple[Issue, str, list[str]]:
    """The issue, its canonical YAML text, and warnings for staff (text imports only)."""
    codes = {s.code for s in taxonomy}
    if looks_like_issue_yaml(data):
        text = data.decode("utf-8-sig")
        return load_issue(text, source=source, sector_codes=codes), text, []
    conversion = convert_text(data, source=source, taxonomy=taxonomy)
    text = conversion.yaml
    # Re-load what we will store, so a stored issue always loads.
    issue = load_issue(text, source=f"{source} (converted)", sector_codes=codes)
    warnings = [f"{source}:{w.line}: {w.message}" for w in conversion.warnings]
    return issue, text, warnings
