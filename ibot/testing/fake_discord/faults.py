"""REST misbehaviour on demand: rate limits, server errors, the starter-message race.

Each fault answers the next `times` requests whose path contains `route` (and whose
method matches, when given), then is spent. Faults are checked in the order they were
added, before the real route runs, so the world is not changed by a failed request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from ibot.testing.fake_discord.constants import UNKNOWN_MESSAGE
from ibot.testing.fake_discord.model import ref_id
from ibot.testing.fake_discord.wire import error_response, json_response

# The response helpers live in wire.py; they stay importable from here.
__all__ = ["Fault", "Faults", "error_response", "json_response"]


@dataclass
class Fault:
    """One armed fault: `respond` builds the answer for each of the next `remaining` hits."""

    kind: str
    route: str
    method: str | None
    remaining: int
    respond: Callable[[], web.Response]
    exact: bool = False
    served: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return path == self.route if self.exact else self.route in path


class Faults:
    """Arms faults; the server asks `take(method, path)` before routing each request."""

    def __init__(self) -> None:
        self.armed: list[Fault] = []

    def rate_limit(
        self,
        route: str,
        *,
        method: str | None = None,
        times: int = 1,
        retry_after: float = 0.05,
        scope: str = "user",
    ) -> Fault:
        """Discord's per-route 429: `Via` header (else nextcord assumes a Cloudflare ban),
        X-RateLimit-* headers with Remaining 0, and the JSON body {retry_after, global}.
        """

        def respond() -> web.Response:
            headers = {
                "Via": "1.1 google",
                "Retry-After": str(max(1, math.ceil(retry_after))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                "X-RateLimit-Scope": scope,
            }
            body = {
                "message": "You are being rate limited.",
                "retry_after": retry_after,
                "global": False,
                "code": 0,
            }
            return json_response(body, 429, headers)

        return self._arm(Fault("rate_limit", route, method, times, respond))

    def server_error(
        self, route: str, *, method: str | None = None, times: int = 1, status: int = 502
    ) -> Fault:
        """A 5xx. nextcord's HTTPClient retries only 500, 502 and 504 (1 s, 3 s, … apart);
        a 503 raises DiscordServerError at once. Its webhook adapter retries any 5xx.
        """
        reason = web.Response(status=status).reason

        def respond() -> web.Response:
            return error_response(status, 0, f"{status}: {reason}")

        return self._arm(Fault("server_error", route, method, times, respond))

    def error(
        self,
        route: str,
        *,
        status: int,
        code: int,
        message: str,
        method: str | None = None,
        times: int = 1,
    ) -> Fault:
        """Any Discord JSON error, e.g. 403 {code: 50013, message: "Missing Permissions"}."""
        return self._arm(
            Fault("error", route, method, times, lambda: error_response(status, code, message))
        )

    def starter_message_race(self, thread: object, *, times: int = 2) -> Fault:
        """GET /channels/{tid}/messages/{tid} answers 404 Unknown Message `times` times:
        real Discord can announce a forum thread before its starter message is readable.
        """
        tid = ref_id(thread)
        route = f"/channels/{tid}/messages/{tid}"
        fault = Fault(
            "starter_message_race",
            route,
            "GET",
            times,
            lambda: error_response(404, UNKNOWN_MESSAGE, "Unknown Message"),
            exact=True,
        )
        return self._arm(fault)

    def clear(self) -> None:
        self.armed.clear()

    def take(self, method: str, path: str) -> tuple[Fault, web.Response] | None:
        for fault in self.armed:
            if fault.remaining > 0 and fault.matches(method, path):
                fault.remaining -= 1
                fault.served += 1
                if fault.remaining == 0:
                    self.armed.remove(fault)
                return fault, fault.respond()
        return None

    def _arm(self, fault: Fault) -> Fault:
        if fault.remaining < 1:
            raise ValueError("times must be at least 1")
        self.armed.append(fault)
        return fault
