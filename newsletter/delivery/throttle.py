"""Rate limits: a token bucket for all messages and one per recipient domain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """At most `rate` acquisitions per second on average, with bursts of up to `burst`."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.clock = clock
        self.sleep = sleep
        self.tokens = self.burst
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def delay(self) -> float:
        """Seconds to wait before the next acquisition may proceed (0: now); takes the token."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def acquire(self) -> None:
        wait = self.delay()
        if wait > 0:
            await self.sleep(wait)


class Throttle:
    """The global limit and a limit per recipient domain, acquired together."""

    def __init__(self, rate: float, per_domain_rate: float) -> None:
        self.overall = TokenBucket(rate, burst=max(1.0, rate / 10))
        self.per_domain_rate = per_domain_rate
        self.domains: dict[str, TokenBucket] = {}

    async def acquire(self, address: str) -> None:
        await self.overall.acquire()
        if self.per_domain_rate > 0:
            domain = address.rpartition("@")[2].lower()
            limiter = self.domains.get(domain)
            if limiter is None:
                limiter = self.domains[domain] = TokenBucket(self.per_domain_rate)
            await limiter.acquire()
