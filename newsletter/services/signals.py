"""Running a long job so that SIGINT and SIGTERM stop it cleanly instead of killing it."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_until_signal(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T:
    """Run `work`; SIGINT or SIGTERM set `stop` so it can finish what is in flight and exit."""

    async def main() -> T:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await work
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(main())
