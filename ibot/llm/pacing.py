"""Pace model calls to the account's rate limits, interactive work first.

OpenAI limits requests and tokens per minute and says, in every answer, how much of
each is left (`x-ratelimit-remaining-*`) and when the bucket is full again
(`x-ratelimit-reset-*`). The pacer keeps a local model of both buckets, refilled
continuously at limit/60 per second, corrected by every answer's headers, and charged
with each call's estimated tokens *before* it is sent. A call waits in a priority queue
until both buckets can take it, so a burst is spread at the rate the account allows
and 429s stay rare instead of being the control loop.

Priorities: interactive work (/ask-gpt, /summary, chat) goes before forum auto-replies;
within a priority, first come first served. Concurrency is bounded too. Queue depth
and the age of the oldest waiting call are exposed for metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import IntEnum

from ibot.domain import Feature, PacerStats, RateLimitInfo

# A reset duration this long is precise enough to derive the refill rate from.
PRECISE_RESET_S = 1.0
# The share of the tokens bucket kept in reserve (see _Bucket.wait_for).
SAFETY_RESERVE = 0.03


class Priority(IntEnum):
    INTERACTIVE = 0
    BACKGROUND = 1


def priority_of(feature: Feature) -> Priority:
    return Priority.BACKGROUND if feature is Feature.AUTO_REPLY else Priority.INTERACTIVE


class _Bucket:
    """A per-minute budget refilled continuously; unknown until the first headers."""

    def __init__(self, clock: Callable[[], float], reserve: float = 0.0) -> None:
        self._clock = clock
        self.reserve = reserve  # share of the limit kept in reserve
        self.limit: float | None = None
        self.rate: float | None = None  # refill per second; limit/60 until headers say
        self._rate_basis_s = 0.0  # the reset duration the rate was derived from
        self.level = 0.0
        self._at = clock()
        self._observed = False

    @property
    def _rate(self) -> float:
        assert self.limit is not None
        return self.rate if self.rate else self.limit / 60.0

    def _refill(self) -> None:
        now = self._clock()
        if self.limit is not None:
            self.level = min(self.limit, self.level + (now - self._at) * self._rate)
        self._at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` fits (0 if now or if the limit is unknown)."""
        if self.limit is None:
            return 0.0
        self._refill()
        # Keep a small reserve: the server counts a call when it arrives, and our clock
        # and its clock drift apart; the reserve absorbs that without costing throughput
        # (the refill rate is unchanged). A call larger than the bucket waits for a full one.
        need = min(amount + self.reserve * self.limit, self.limit)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self._rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def configure(self, per_minute: int) -> None:
        self.limit = self.level = float(per_minute)

    def observe(
        self, limit: int | None, remaining: int | None, reset_s: float | None, in_flight: float
    ) -> None:
        """Adopt the server's view when it is the stricter one.

        Our level is charged when a call is sent; the server's `remaining` misses the
        calls still on their way to it, so it can only be more generous than the truth,
        never stricter: take the lower of the two. The first answer sets the limit, and
        `reset` (time until the bucket is full again) gives the refill rate; since
        nothing was tracked before it, everything still in flight is taken off it.
        """
        if limit is None or remaining is None:
            return
        self._refill()
        self.limit = float(limit)
        # Resets are rounded (to the millisecond, or the second): a short one gives a
        # rough rate, which could overshoot the server's. Learn from the longest seen,
        # and from any that is long enough to be precise (a changed limit shows there).
        if (
            reset_s
            and remaining < limit
            and (reset_s >= self._rate_basis_s or reset_s >= PRECISE_RESET_S)
        ):
            self.rate = (limit - remaining) / reset_s
            self._rate_basis_s = reset_s
        server = float(remaining)
        self.level = min(self.level, server) if self._observed else server - in_flight
        self._observed = True


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    tokens: int = field(compare=False)
    enqueued_at: float = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)


class Pacer:
    def __init__(
        self,
        *,
        max_concurrency: int = 8,
        clock: Callable[[], float] = time.monotonic,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> None:
        self.max_concurrency = max_concurrency
        self._clock = clock
        self._requests = _Bucket(clock)
        self._tokens = _Bucket(clock, reserve=SAFETY_RESERVE)
        if requests_per_minute:
            self._requests.configure(requests_per_minute)
        if tokens_per_minute:
            self._tokens.configure(tokens_per_minute)
        self._heap: list[_Waiter] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._in_flight_tokens = 0
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    # ----- public ----------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self, feature: Feature, estimated_tokens: int) -> AsyncIterator[None]:
        """Hold a paced slot for one call; the body sends the request."""
        await self._acquire(priority_of(feature), estimated_tokens)
        try:
            yield
        finally:
            self._in_flight -= 1
            self._in_flight_tokens -= estimated_tokens
            self._wake.set()

    def observe(self, info: RateLimitInfo | None) -> None:
        """Feed the rate-limit headers of an answer (or of a 429)."""
        if info is None:
            return
        self._requests.observe(
            info.limit_requests, info.remaining_requests, info.reset_requests_s, self._in_flight
        )
        self._tokens.observe(
            info.limit_tokens, info.remaining_tokens, info.reset_tokens_s, self._in_flight_tokens
        )
        self._wake.set()

    def poke(self) -> None:
        """Re-check the queue now (time moved, for a test clock)."""
        self._wake.set()

    def back_off(self, seconds: float) -> None:
        """A 429 happened anyway: empty the buckets so nobody is sent for `seconds`."""
        for bucket in (self._requests, self._tokens):
            if bucket.limit is not None:
                bucket.take(bucket.level + seconds * bucket._rate)
        self._wake.set()

    def stats(self) -> PacerStats:
        now = self._clock()
        live = [w for w in self._heap if not w.future.done()]
        oldest = min((w.enqueued_at for w in live), default=now)
        by_priority = {p.name.lower(): 0 for p in Priority}
        for w in live:
            by_priority[Priority(w.priority).name.lower()] += 1
        return PacerStats(len(live), now - oldest, self._in_flight, by_priority)

    async def aclose(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            self._runner = None

    # ----- internals -------------------------------------------------------------------

    async def _acquire(self, priority: Priority, tokens: int) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(priority, next(self._seq), tokens, self._clock(), future)
        heapq.heappush(self._heap, waiter)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="ibot-pacer")
        self._wake.set()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted just as we were cancelled: give the slot back.
                self._in_flight -= 1
                self._in_flight_tokens -= tokens
                self._wake.set()
            raise

    async def _run(self) -> None:
        """Grant slots in priority order as the buckets and the concurrency allow."""
        while True:
            while self._heap and self._heap[0].future.done():  # cancelled waiters
                heapq.heappop(self._heap)
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            head = self._heap[0]
            if self._in_flight >= self.max_concurrency:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = max(self._requests.wait_for(1), self._tokens.wait_for(head.tokens))
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            heapq.heappop(self._heap)
            self._requests.take(1)
            self._tokens.take(head.tokens)
            self._in_flight += 1
            self._in_flight_tokens += head.tokens
            head.future.set_result(None)
