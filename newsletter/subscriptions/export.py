"""Exports that round-trip with import: one CSV or one file per embassy, formulas neutralised."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlmodel import Session

from newsletter.subscriptions import store
from newsletter.subscriptions.lists import ListRow, write_list


def export_rows(
    session: Session,
    *,
    embassy: str | None = None,
    sector: str | None = None,
    status: str | None = None,
) -> list[ListRow]:
    """The listed subscribers (never erased rows) as list rows, by embassy then address."""
    store.check_filters(session, embassy=embassy, sector=sector)
    views = store.list_views(session, embassy=embassy, sector=sector, status=status)
    return [
        ListRow(v.email, v.name, v.title, v.embassy, v.sectors, v.language, "export", 0, v.status)
        for v in views
    ]


def export_text(rows: Sequence[ListRow]) -> str:
    """One CSV for every embassy (with an `embassy` column)."""
    return write_list(rows, with_embassy=True)


def export_by_embassy(rows: Sequence[ListRow]) -> dict[str, str]:
    """`<embassy-code>.csv` file name -> CSV text; the file name gives the embassy on import."""
    grouped: dict[str, list[ListRow]] = defaultdict(list)
    for row in rows:
        grouped[row.embassy].append(row)
    return {f"{code}.csv": write_list(group, with_embassy=False) for code, group in grouped.items()}
