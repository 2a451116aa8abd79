"""Answers being produced right now, so that a graceful stop lets them finish.

SIGTERM (a service manager, `docker stop`) closes the bot; without this, an answer
whose model call had returned would be dropped between the model and Discord, leaving
the thread for the next start's catch-up and its model call paid twice. Discord-free:
cogs mark their work with `track()`, and the bot drains before it disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class InFlight:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self.draining = False  # no new automatic work once a stop has begun

    def __len__(self) -> int:
        return sum(1 for task in self._tasks if not task.done())

    def running(self) -> set[asyncio.Task[object]]:
        """The tasks whose work is in flight now (to await, or to cancel after a stop)."""
        return {task for task in self._tasks if not task.done()}

    @contextlib.asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        """Count the current task as in-flight work until the block ends."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109
        """Stop taking new work and wait up to `timeout` s for the work in flight;
        returns how many pieces of work were still running when the time ran out."""
        self.draining = True
        current = asyncio.current_task()
        running = {task for task in self._tasks if task is not current and not task.done()}
        if not running or timeout <= 0:
            return len(running)
        _, still = await asyncio.wait(running, timeout=timeout)
        return len(still)
