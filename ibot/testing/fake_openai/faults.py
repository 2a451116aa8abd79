"""Injected misbehaviour: the upstream failures iBot must survive, on demand or at random.

A test queues faults (`fake.hang()`, `fake.rate_limit()`, …: each spends one request) or
sets `fake.fault_rates` for a share of all requests. A fault is drawn once the API key
is checked and before the body is read, as a failing upstream answers whatever was
asked: 5xx, injected 429s (rate limit, insufficient_quota), hangs that only the client's
timeout ends, dropped connections; slow answers, streams cut mid-way and streams that
end in an error event let the request go on and act later. Kept apart so the normal
path in server.py reads without them.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ibot.testing.fake_openai import response_building as build
from ibot.testing.fake_openai.records import RecordedRequest

# The statuses a random "5xx" fault picks from.
RANDOM_5XX = (500, 502, 503)


@dataclass
class Fault:
    """One injected misbehaviour, used by the next matching request(s)."""

    # "status", "rate_limit", "quota", "slow", "hang", "drop", "stream_cut", "stream_error"
    kind: str
    status: int = 500
    delay_s: float = 0.0
    retry_after_s: float | None = None
    cut_after_chunks: int = 2
    error_after_chunks: int = 2


class FaultInjector:
    """The queued faults, then random ones at `rates` (kind → share of requests).

    A rate's kind is a `Fault.kind`, or "5xx" for a status picked from 500, 502 and 503.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rates: dict[str, float] = {}
        self._queue: deque[Fault] = deque()
        self._random = random.Random(seed)

    def inject(self, fault: Fault, times: int = 1) -> None:
        self._queue.extend([fault] * times)

    def next(self) -> Fault | None:
        """The fault for the next request, or None when it goes through normally."""
        if self._queue:
            return self._queue.popleft()
        roll = self._random.random()
        for kind, rate in self.rates.items():
            if roll < rate:
                if kind == "5xx":
                    return Fault("status", status=self._random.choice(RANDOM_5XX))
                return Fault(kind)
            roll -= rate
        return None


async def answer_fault(
    request: web.Request,
    fault: Fault,
    record: RecordedRequest,
    *,
    pause: Callable[[float], Awaitable[None]],
    hang_s: float,
    retry_after: bool = True,
) -> web.StreamResponse | None:
    """Answer the fault, or return None when the request goes on (slow, stream_cut,
    stream_error).

    `pause` waits (a hang waits `hang_s`) but ends when the server stops. Without
    `retry_after`, a rate limit's 429 carries no Retry-After header.
    """
    record.fault = fault.kind
    if fault.kind == "status":
        record.status = fault.status
        return build.server_error(fault.status)
    if fault.kind == "rate_limit":
        record.status = 429
        retry = fault.retry_after_s if fault.retry_after_s is not None else 1.0
        return build.rate_limited(retry if retry_after else None)
    if fault.kind == "quota":
        record.status = 429
        return build.insufficient_quota()
    if fault.kind == "hang":
        record.status = 0
        await pause(hang_s)
        return web.Response(status=504)  # reached only when the server stops first
    if fault.kind == "drop":
        record.status = 0
        request.transport.abort()  # type: ignore[union-attr]
        return web.Response(status=500)  # never reaches the client: the connection is gone
    record.fault = None  # slow answers and broken streams are marked when they happen
    return None
