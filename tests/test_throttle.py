"""Rate limits with an injected clock: the average rate holds, bursts are bounded."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from newsletter.delivery.throttle import Throttle, TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@given(st.floats(min_value=0.5, max_value=500), st.integers(min_value=2, max_value=400))
def test_n_acquisitions_take_at_least_n_over_rate(rate: float, n: int) -> None:
    t = FakeTime()
    limiter = TokenBucket(rate, clock=t.clock, sleep=t.sleep)

    async def go() -> None:
        for _ in range(n):
            await limiter.acquire()

    asyncio.run(go())
    assert t.now >= (n - 1) / rate - 1e-6
    assert t.now <= n / rate + 1e-6


def test_zero_rate_never_waits() -> None:
    t = FakeTime()
    limiter = TokenBucket(0, clock=t.clock, sleep=t.sleep)
    assert all(limiter.delay() == 0 for _ in range(1000))


def test_per_domain_limit_is_separate_per_domain() -> None:
    throttle = Throttle(rate=0, per_domain_rate=2)
    t = FakeTime()
    for limiter_domain in ("mfa.example.org", "other.example.org"):
        throttle.domains[limiter_domain] = TokenBucket(2, clock=t.clock, sleep=t.sleep)

    async def go() -> None:
        for _ in range(3):
            await throttle.acquire("a@mfa.example.org")
        await throttle.acquire("b@OTHER.example.org")

    asyncio.run(go())
    assert t.now == 1.0  # three on one domain at 2/s; the other domain did not wait
