"""Render each profile's digest once, however many subscribers share it, even across threads."""

from __future__ import annotations

import threading
from collections.abc import Callable

from newsletter.render.digest import RenderedDigest


class ProfileCache:
    """Digests by profile key; `renders` counts real renders (the rest were hits)."""

    def __init__(self) -> None:
        self._digests: dict[str, RenderedDigest] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.renders = 0

    def __len__(self) -> int:
        return len(self._digests)

    def get_or_render(self, key: str, render: Callable[[], RenderedDigest]) -> RenderedDigest:
        found = self._digests.get(key)
        if found is not None:
            return found
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        # One lock per key: threads wanting the same profile wait for one render, while other
        # profiles render alongside. A render that raises caches nothing, so the next call retries.
        with lock:
            found = self._digests.get(key)
            if found is None:
                found = render()
                with self._guard:
                    self._digests[key] = found
                    self.renders += 1
        return found

    def clear(self) -> None:
        with self._guard:
            self._digests.clear()
            self._locks.clear()
