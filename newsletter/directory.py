"""The sector taxonomy and embassy directory: read from the data folder, kept in the database."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlmodel import Session, col, select

import newsletter
from newsletter.errors import ConfigError, NewsletterError, NotFoundError
from newsletter.models import Embassy, MissionClosure, Sector
from newsletter.taxonomy import EmbassyDef, SectorDef, parse_embassies, parse_sectors

# The host city's subdivision (ISO 3166-2, as the `holidays` package names it) where its public
# holidays differ from the country's: Munich keeps Bavaria's, a mission to the UN in Geneva the
# canton's, to the UN in New York the state's. A city not listed keeps the national calendar.
HOST_SUBDIVISIONS: dict[tuple[str, str], str] = {
    ("AU", "Canberra"): "ACT", ("AU", "Sydney"): "NSW",
    ("BR", "Brasília"): "DF",
    ("CA", "Ottawa"): "ON", ("CA", "Vancouver"): "BC",
    ("CH", "Bern"): "BE", ("CH", "Geneva"): "GE",
    ("DE", "Berlin"): "BE", ("DE", "Munich"): "BY",
    ("GB", "London"): "ENG",
    ("IN", "Mumbai"): "MH", ("IN", "New Delhi"): "DL",
    ("IT", "Rome"): "RM",
    ("MY", "Kuala Lumpur"): "14",
    ("NZ", "Wellington"): "WGN",
    ("US", "Chicago"): "IL", ("US", "Los Angeles"): "CA", ("US", "New York"): "NY",
    ("US", "San Francisco"): "CA", ("US", "Washington"): "DC",
}  # fmt: skip
# A closure longer than this is a typo in a date.
MAX_CLOSURE_DAYS = 366


def host_subdivision(country: str, city: str) -> str:
    return HOST_SUBDIVISIONS.get((country.upper(), city.strip()), "")


@dataclass(frozen=True)
class Reference:
    sectors: tuple[SectorDef, ...]
    embassies: tuple[EmbassyDef, ...]


def bundled_data_dir() -> Path:
    """The sample data: `subscribers/` of a checkout, or the copy installed with the package."""
    checkout = Path(newsletter.__file__).resolve().parent.parent / "subscribers"
    return checkout if checkout.is_dir() else Path(newsletter.__file__).parent / "_subscribers"


def read_reference(data_dir: Path) -> Reference:
    sectors_file, embassies_file = data_dir / "sectors.yaml", data_dir / "embassies.csv"
    for file in (sectors_file, embassies_file):
        if not file.is_file():
            raise ConfigError(f"{file} not found; set 'data_dir' to a folder holding it")
    sectors = parse_sectors(sectors_file.read_text(encoding="utf-8"), source=str(sectors_file))
    embassies = parse_embassies(
        embassies_file.read_text(encoding="utf-8"),
        source=str(embassies_file),
        sector_codes={s.code for s in sectors},
    )
    return Reference(sectors, embassies)


def sync_reference(session: Session, reference: Reference) -> None:
    """Insert or update every sector and embassy (no commit); rows no longer listed are kept
    (subscribers use them)."""
    for position, s in enumerate(reference.sectors):
        session.merge(
            Sector(
                code=s.code,
                name_zh=s.zh,
                name_en=s.en,
                keywords=list(s.keywords),
                position=position,
            )
        )
    for e in reference.embassies:
        # The table and the value share their field names; only the sequence types differ.
        fields = {
            **asdict(e),
            "regions": list(e.regions),
            "default_sectors": list(e.default_sectors),
        }
        session.merge(Embassy(**fields))
    session.flush()


def sectors(session: Session) -> dict[str, SectorDef]:
    rows = session.exec(select(Sector).order_by(col(Sector.position), Sector.code)).all()
    return {r.code: SectorDef(r.code, r.name_zh, r.name_en, tuple(r.keywords)) for r in rows}


def embassies(session: Session) -> dict[str, EmbassyDef]:
    rows = session.exec(select(Embassy).order_by(Embassy.code)).all()
    return {
        r.code: EmbassyDef(
            **{
                **r.model_dump(),
                "regions": tuple(r.regions),
                "default_sectors": tuple(r.default_sectors),
            }
        )
        for r in rows
    }


# --- closures ---------------------------------------------------------------------------------


class ClosureInputError(NewsletterError, ValueError):
    """A closure's dates cannot be stored as given."""


def _embassy(session: Session, code: str) -> Embassy:
    embassy = session.get(Embassy, code)
    if embassy is None:
        raise NotFoundError("mission", code, "see `newsletter embassies list`")
    return embassy


def add_closure(
    session: Session,
    code: str,
    first: dt.date,
    last: dt.date,
    reason: str,
    *,
    now: dt.datetime,
) -> MissionClosure:
    """Record a closure (no commit); refused when it overlaps one already recorded."""
    _embassy(session, code)
    if last < first:
        raise ClosureInputError(
            f"--to {last.isoformat()} is before {first.isoformat()}; give the last closed day"
        )
    if (last - first).days >= MAX_CLOSURE_DAYS:
        raise ClosureInputError(
            f"{first.isoformat()} to {last.isoformat()} is longer than {MAX_CLOSURE_DAYS} days; "
            "check the dates"
        )
    overlap = session.exec(
        select(MissionClosure).where(
            col(MissionClosure.embassy_code) == code,
            col(MissionClosure.first_day) <= last,
            col(MissionClosure.last_day) >= first,
        )
    ).first()
    if overlap is not None:
        raise ClosureInputError(
            f"{code} is already closed {overlap.first_day.isoformat()} to "
            f"{overlap.last_day.isoformat()} (closure {overlap.id}); remove it first with "
            f"`newsletter embassies closure remove {overlap.id}`"
        )
    closure = MissionClosure(
        embassy_code=code, first_day=first, last_day=last, reason=reason.strip(), created_at=now
    )
    session.add(closure)
    session.flush()
    return closure


def closures(session: Session, code: str | None = None) -> list[MissionClosure]:
    """Closures by mission and first day (of one mission when `code` is given)."""
    query = select(MissionClosure).order_by(
        col(MissionClosure.embassy_code), col(MissionClosure.first_day)
    )
    if code is not None:
        _embassy(session, code)
        query = query.where(col(MissionClosure.embassy_code) == code)
    return list(session.exec(query))


def remove_closure(session: Session, closure_id: int) -> MissionClosure:
    closure = session.get(MissionClosure, closure_id)
    if closure is None:
        raise NotFoundError("closure", str(closure_id), "see `newsletter embassies closure list`")
    session.delete(closure)
    session.flush()
    return closure
