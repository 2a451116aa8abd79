"""Per-user cooldowns: one question per user every N seconds."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class Cooldowns:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._last: dict[Hashable, float] = {}

    def try_acquire(self, key: Hashable) -> float:
        """0.0 and the use is recorded, or the seconds left to wait (nothing recorded)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.seconds:
            return self.seconds - (now - last)
        self._last[key] = now
        if len(self._last) > 10_000:  # forget users whose cooldown is long over
            cutoff = now - self.seconds
            self._last = {k: v for k, v in self._last.items() if v > cutoff}
        return 0.0

    def release(self, key: Hashable) -> None:
        """Give the use back (the question was refused before costing anything)."""
        self._last.pop(key, None)
