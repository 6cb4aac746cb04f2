"""Reference data as plain values: the sector taxonomy and the embassy directory, parsed from text."""

from __future__ import annotations

import csv
import io
import re
import zoneinfo
from dataclasses import dataclass

import yaml

from newsletter.errors import ContentError

WORKING_WEEKS: dict[str, tuple[int, ...]] = {
    # ISO weekday numbers (Monday = 1) of the working days.
    "mon-fri": (1, 2, 3, 4, 5),
    "sun-thu": (7, 1, 2, 3, 4),
    "sat-wed": (6, 7, 1, 2, 3),
    "mon-sat": (1, 2, 3, 4, 5, 6),
}
_CODE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,59}$")


class ReferenceDataError(ContentError):
    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source = source
        self.line = line
        super().__init__(f"{source}:{line}: {problem}" if line else f"{source}: {problem}")


@dataclass(frozen=True)
class SectorDef:
    code: str
    zh: str
    en: str
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class EmbassyDef:
    code: str
    kind: str  # embassy | consulate | mission
    name_zh: str
    name_en: str
    country: str  # ISO 3166-1 alpha-2
    city: str
    timezone: str  # IANA name
    working_week: str  # a key of WORKING_WEEKS
    regions: tuple[str, ...] = ()  # region codes besides the country, such as "eu"
    default_sectors: tuple[str, ...] = ()

    @property
    def places(self) -> frozenset[str]:
        return frozenset((self.country, *self.regions))


def parse_sectors(text: str, *, source: str = "sectors.yaml") -> tuple[SectorDef, ...]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ReferenceDataError(source, None, f"not valid YAML: {exc}") from None
    rows = data.get("sectors") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ReferenceDataError(source, None, "needs a top-level `sectors:` list")
    out: list[SectorDef] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        where = f"sectors[{i}]"
        if not isinstance(row, dict):
            raise ReferenceDataError(source, None, f"{where} must be a mapping")
        code = str(row.get("code", "")).strip()
        if not _CODE_RE.match(code):
            raise ReferenceDataError(source, None, f"{where}.code {code!r} must be like 'ai'")
        if code in seen:
            raise ReferenceDataError(source, None, f"{where}.code {code!r} appears twice")
        seen.add(code)
        zh, en = str(row.get("zh", "")).strip(), str(row.get("en", "")).strip()
        if not zh or not en:
            raise ReferenceDataError(source, None, f"{where} ({code}) needs both zh and en names")
        keywords = tuple(str(k).strip() for k in row.get("keywords") or () if str(k).strip())
        out.append(SectorDef(code, zh, en, keywords))
    return tuple(out)


def _split(cell: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (cell or "").split(";") if part.strip())


EMBASSY_COLUMNS = (
    "code", "kind", "name_zh", "name_en", "country", "city", "timezone", "working_week",
    "regions", "default_sectors",
)  # fmt: skip


def parse_embassies(
    text: str, *, source: str = "embassies.csv", sector_codes: set[str] | None = None
) -> tuple[EmbassyDef, ...]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in EMBASSY_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ReferenceDataError(source, 1, f"missing columns: {', '.join(missing)}")
    zones = zoneinfo.available_timezones()
    out: list[EmbassyDef] = []
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        code = (row["code"] or "").strip()
        if not _CODE_RE.match(code) or code in seen:
            raise ReferenceDataError(
                source, line, f"code {code!r} is not a new code like 'de-berlin'"
            )
        seen.add(code)
        if row["timezone"] not in zones:
            raise ReferenceDataError(
                source, line, f"timezone {row['timezone']!r} is not an IANA zone"
            )
        if row["working_week"] not in WORKING_WEEKS:
            raise ReferenceDataError(
                source,
                line,
                f"working_week {row['working_week']!r}: use one of {', '.join(WORKING_WEEKS)}",
            )
        country = (row["country"] or "").strip().upper()
        if not re.fullmatch(r"[A-Z]{2}", country):
            raise ReferenceDataError(
                source, line, f"country {country!r} must be an ISO code like DE"
            )
        defaults = _split(row["default_sectors"])
        unknown = [c for c in defaults if sector_codes is not None and c not in sector_codes]
        if unknown:
            raise ReferenceDataError(
                source, line, f"default_sectors: unknown codes {', '.join(unknown)}"
            )
        out.append(
            EmbassyDef(
                code=code,
                kind=(row["kind"] or "embassy").strip(),
                name_zh=row["name_zh"].strip(),
                name_en=row["name_en"].strip(),
                country=country,
                city=row["city"].strip(),
                timezone=row["timezone"],
                working_week=row["working_week"],
                regions=tuple(r.lower() for r in _split(row["regions"])),
                default_sectors=defaults,
            )
        )
    return tuple(out)
