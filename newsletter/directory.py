"""The sector taxonomy and embassy directory: read from the data folder, kept in the database."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from sqlmodel import Session, col, select

import newsletter
from newsletter.errors import ConfigError
from newsletter.models import Embassy, Sector
from newsletter.taxonomy import EmbassyDef, SectorDef, parse_embassies, parse_sectors


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
