"""OpenAI's per-minute rate limits: token buckets, `x-ratelimit-*` headers, 429s.

iBot paces itself by the `x-ratelimit-*` headers and retries after a 429's Retry-After,
so the fake keeps the two buckets the API keeps (requests and tokens per minute, refilled
continuously) and refuses a request whose estimate (prompt + max tokens) does not fit.
Deciding is done here; the 429 itself is built in response_building.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# The longest Retry-After a refusal announces.
MAX_WAIT_S = 60.0


class TokenBucket:
    """A per-minute limit refilled continuously, as OpenAI's rate limits behave.

    `window_s` is the minute's length: tests shrink it so that a burst that would take
    minutes against real limits is paced the same way in seconds.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float], window_s: float = 60.0) -> None:
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self.rate = per_minute / window_s
        self._clock = clock
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
        self._at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        self._refill()
        if amount <= self.level:
            return 0.0
        if amount > self.capacity:
            return float("inf")
        return (amount - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def reset_s(self) -> float:
        self._refill()
        return (self.capacity - self.level) / self.rate


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: the bucket that is short and how long until it is not."""

    kind: str  # "requests" or "tokens"
    wait_s: float
    headers: dict[str, str]  # the x-ratelimit-* headers at the moment of refusal


class RateLimits:
    """The requests-per-minute and tokens-per-minute buckets (None: unlimited)."""

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        clock: Callable[[], float],
        window_s: float = 60.0,
    ) -> None:
        self.requests = TokenBucket(rpm, clock, window_s) if rpm else None
        self.tokens = TokenBucket(tpm, clock, window_s) if tpm else None

    def admit(self, estimated_tokens: int) -> Refusal | None:
        """Take one request and `estimated_tokens` from the buckets, or refuse if short."""
        waits = []
        if self.requests is not None:
            waits.append(("requests", self.requests.wait_for(1)))
        if self.tokens is not None:
            waits.append(("tokens", self.tokens.wait_for(estimated_tokens)))
        blocked = [(kind, wait) for kind, wait in waits if wait > 0]
        if blocked:
            kind, wait = max(blocked, key=lambda item: item[1])
            return Refusal(kind, min(wait, MAX_WAIT_S), self.headers())
        if self.requests is not None:
            self.requests.take(1)
        if self.tokens is not None:
            self.tokens.take(estimated_tokens)
        return None

    def headers(self) -> dict[str, str]:
        """x-ratelimit-limit/remaining/reset-{requests,tokens}, for the limits in force."""
        headers: dict[str, str] = {}
        for kind, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is None:
                continue
            headers[f"x-ratelimit-limit-{kind}"] = str(int(bucket.capacity))
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
            headers[f"x-ratelimit-reset-{kind}"] = f"{bucket.reset_s() * 1000:.0f}ms"
        return headers
