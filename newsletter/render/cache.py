"""Render each profile's digest once, however many subscribers share it, in bounded memory."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from newsletter.render.digest import RenderedDigest

V = TypeVar("V")


class BoundedCache(Generic[V]):
    """Values by key, least recently used dropped past `maxsize`; `renders` counts real builds.

    The engine sends rows grouped by profile, so a small bound keeps memory flat however many
    profiles a campaign has, while each profile is still built about once.
    """

    def __init__(self, maxsize: int | None = 32) -> None:
        self.maxsize = maxsize
        self._values: OrderedDict[str, V] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.renders = 0

    def __len__(self) -> int:
        return len(self._values)

    def get_or_render(self, key: str, render: Callable[[], V]) -> V:
        with self._guard:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            lock = self._locks.setdefault(key, threading.Lock())
        # One lock per key: threads wanting the same profile wait for one render, while other
        # profiles render alongside. A render that raises caches nothing, so the next call retries.
        with lock:
            with self._guard:
                if key in self._values:
                    return self._values[key]
            value = render()
            with self._guard:
                self._values[key] = value
                self.renders += 1
                while self.maxsize is not None and len(self._values) > self.maxsize:
                    dropped, _ = self._values.popitem(last=False)
                    self._locks.pop(dropped, None)
        return value


class ProfileCache(BoundedCache[RenderedDigest]):
    """Rendered digests by profile key."""
