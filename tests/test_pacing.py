"""The pacer: interactive calls first, never past the rate limits it knows of."""

from __future__ import annotations

import asyncio

import pytest

from ibot.domain import Feature, RateLimitInfo
from ibot.llm.pacing import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    """Let every ready task run (no wall-clock waiting)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_interactive_calls_overtake_waiting_auto_replies():
    pacer = Pacer(max_concurrency=1)
    order: list[str] = []
    release = asyncio.Event()

    async def call(name: str, feature: Feature) -> None:
        async with pacer.slot(feature, 10):
            order.append(name)
            if name == "first":
                await release.wait()

    first = asyncio.create_task(call("first", Feature.AUTO_REPLY))
    await settle()
    waiting = [
        asyncio.create_task(call("forum-1", Feature.AUTO_REPLY)),
        asyncio.create_task(call("forum-2", Feature.AUTO_REPLY)),
    ]
    await settle()
    waiting.append(asyncio.create_task(call("ask", Feature.ASK)))
    await settle()
    assert pacer.stats().depth == 3
    assert pacer.stats().depth_by_priority == {"interactive": 1, "background": 2}
    release.set()
    await asyncio.gather(first, *waiting)
    assert order == ["first", "ask", "forum-1", "forum-2"]
    await pacer.aclose()


async def test_token_bucket_holds_calls_until_it_refills():
    clock = Clock()
    # 100 tokens/s; 3 % of the bucket (180 tokens) stays in reserve.
    pacer = Pacer(max_concurrency=100, clock=clock, tokens_per_minute=6000)
    granted: list[int] = []

    async def call(i: int) -> None:
        async with pacer.slot(Feature.ASK, 1900):
            granted.append(i)

    tasks = [asyncio.create_task(call(i)) for i in range(5)]
    await settle()
    assert granted == [0, 1, 2]  # 6000 tokens: three calls of 1900 (+ the reserve)
    clock.now += 10  # 1000 tokens refilled, 1300 in all: not enough for 1900 + 180
    pacer.poke()
    await settle()
    assert granted == [0, 1, 2]
    clock.now += 10
    pacer.poke()
    await settle()
    assert granted == [0, 1, 2, 3]
    clock.now += 20
    pacer.poke()
    await asyncio.gather(*tasks)
    assert granted == [0, 1, 2, 3, 4]
    await pacer.aclose()


async def test_headers_that_say_less_is_left_are_followed():
    clock = Clock()
    pacer = Pacer(clock=clock)
    # No limits known yet: calls go at once.
    async with pacer.slot(Feature.ASK, 500):
        pass
    pacer.observe(
        RateLimitInfo(
            limit_requests=60, remaining_requests=0, limit_tokens=10_000, remaining_tokens=10_000
        )
    )
    done = asyncio.Event()

    async def call() -> None:
        async with pacer.slot(Feature.ASK, 500):
            done.set()

    task = asyncio.create_task(call())
    await settle()
    assert not done.is_set()  # no request left in this minute
    clock.now += 1.0  # 60 per minute: one request back after a second
    pacer.poke()
    await task
    assert pacer.stats().depth == 0
    await pacer.aclose()


async def test_cancelled_waiter_leaves_the_queue():
    pacer = Pacer(max_concurrency=1)
    hold = asyncio.Event()

    async def blocker() -> None:
        async with pacer.slot(Feature.ASK, 1):
            await hold.wait()

    first = asyncio.create_task(blocker())
    await settle()
    cancelled = asyncio.create_task(blocker())
    await settle()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    hold.set()
    await first
    assert pacer.stats().depth == 0 and pacer.stats().in_flight == 0
    async with pacer.slot(Feature.ASK, 1):
        assert pacer.stats().in_flight == 1
    await pacer.aclose()


async def test_refill_rate_is_learned_from_the_reset_header():
    clock = Clock()
    pacer = Pacer(clock=clock)
    # 6000 tokens a "minute" that refills in 6 s: 1000 tokens per second, not 100.
    pacer.observe(
        RateLimitInfo(
            limit_tokens=6000,
            remaining_tokens=0,
            reset_tokens_s=6.0,
            limit_requests=1000,
            remaining_requests=1000,
        )
    )
    done = asyncio.Event()

    async def call() -> None:
        async with pacer.slot(Feature.ASK, 2000):
            done.set()

    task = asyncio.create_task(call())
    await settle()
    assert not done.is_set()
    clock.now += 2.2  # 2000 tokens (+ the 180 reserve) back at 1000/s
    pacer.poke()
    await task
    await pacer.aclose()
