"""Access logs name the route, never the capability: `/unsubscribe/{token}`, not the token.

A signed link is the whole proof a request needs (one-click unsubscribe posts no cookie), so a
log line holding one would let anyone who reads the logs unsubscribe the person, or change their
sectors. uvicorn writes its access line from the raw request path; a filter on its access logger
rewrites that path before any handler formats it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

ACCESS_LOGGER = "uvicorn.access"
# uvicorn.logging.AccessFormatter reads (client, method, path with query, HTTP version, status).
_PATH_ARG = 2


def capability_pattern(routes: Iterable[str]) -> re.Pattern[str]:
    """What to redact in a path, from the app's route templates that carry a `{token}`.

    Matched anywhere in the path (a proxy may keep a prefix such as `/newsletter`), up to the
    next `/`, `?` or `#`, so the query string after a token goes as well.
    """
    prefixes = sorted({r.split("{token}")[0] for r in routes if "{token}" in r}, key=len)
    if not prefixes:
        return re.compile(r"(?!x)x")  # matches nothing
    alternatives = "|".join(re.escape(p) for p in reversed(prefixes))
    return re.compile(rf"(?P<route>{alternatives})[^/?#\s]+(?:[?#]\S*)?")


def redact(path: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub(lambda m: f"{m.group('route')}{{token}}", path)


class RedactCapabilities(logging.Filter):
    """Rewrites the path of uvicorn's access records (and the message of any other record
    on the logger) so no signed token reaches a handler."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        path = args[_PATH_ARG] if isinstance(args, tuple) and len(args) > _PATH_ARG else None
        if isinstance(args, tuple) and isinstance(path, str):
            record.args = (*args[:_PATH_ARG], redact(path, self.pattern), *args[_PATH_ARG + 1 :])
        elif isinstance(record.msg, str) and not args:
            record.msg = redact(record.msg, self.pattern)
        return True


def install(routes: Iterable[str]) -> RedactCapabilities:
    """Put the filter on uvicorn's access logger once (a second app in one process reuses it).

    On the logger, not its handlers: uvicorn's logging config replaces the handlers when the
    server starts but keeps the logger's filters.
    """
    logger = logging.getLogger(ACCESS_LOGGER)
    pattern = capability_pattern(routes)
    for existing in logger.filters:
        if isinstance(existing, RedactCapabilities):
            existing.pattern = pattern
            return existing
    installed = RedactCapabilities(pattern)
    logger.addFilter(installed)
    return installed
