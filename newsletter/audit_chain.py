"""The audit chain's arithmetic: each event's hash covers the one before it and the event itself.

hash = sha256(prev_hash + "\\n" + canonical JSON of the event's fields), the first event's
prev_hash being 64 zeros. Changing any field of a stored event changes its hash; removing or
reordering events breaks the next event's prev_hash. Pure: rows in, the first break out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

GENESIS = "0" * 64
# The fields a hash covers, in the order written; `id` is not one (the database assigns it
# after the hash is made) but the order of ids is the order of the chain.
FIELDS = ("at", "actor_kind", "actor_id", "via", "action", "target", "mission", "detail", "ip")


def instant(value: dt.datetime) -> str:
    """One spelling of an instant, whatever the database hands back (SQLite: naive UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(fields: Mapping[str, object]) -> bytes:
    values = {name: fields[name] for name in FIELDS}
    at = values["at"]
    if isinstance(at, dt.datetime):
        values["at"] = instant(at)
    return json.dumps(values, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def link(prev_hash: str, fields: Mapping[str, object]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(fields)).hexdigest()


def detail_text(detail: Mapping[str, object] | None) -> str:
    """The `detail` column: canonical JSON, hashed exactly as stored."""
    if not detail:
        return ""
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Break:
    """The first event that does not hold: its id and what is wrong with it."""

    id: int
    problem: str


@dataclass(frozen=True)
class Verified:
    events: int
    head: str  # the last event's hash: kept elsewhere, it also proves nothing was cut off the end
    broken: Break | None


def verify(rows: Iterable[tuple[int, str, str, Mapping[str, object]]]) -> Verified:
    """Walk (id, prev_hash, hash, fields) in id order; stop at the first break."""
    expected_prev, count = GENESIS, 0
    for row_id, prev_hash, stored_hash, fields in rows:
        if prev_hash != expected_prev:
            before = "the first event" if expected_prev == GENESIS else "the event before it"
            return Verified(count, expected_prev, Break(
                row_id,
                f"its prev_hash does not match {before}'s hash: an event before it was removed, "
                "inserted or changed",
            ))  # fmt: skip
        if link(prev_hash, fields) != stored_hash:
            return Verified(count, expected_prev, Break(
                row_id, "its contents do not match its hash: the event was changed"
            ))  # fmt: skip
        expected_prev, count = stored_hash, count + 1
    return Verified(count, expected_prev, None)
