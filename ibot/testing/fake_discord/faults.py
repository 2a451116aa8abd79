"""REST misbehaviour on demand: rate limits, server errors, the starter-message race;
and the CDN's refusals of an attachment download (403, 404).

Each fault answers the next `times` requests whose path contains `route` (and whose
method matches, when given), then is spent. Faults are checked in the order they were
added, before the real route runs, so the world is not changed by a failed request.
CDN faults (`attachment_error`) answer only downloads, the others only REST calls.

The three 429s of rate-limits.mdx: `rate_limit` (the user's per-route limit, scope
`user`, Remaining 0), `global_rate_limit` (`global: true`, `X-RateLimit-Global`, scope
`global`, no bucket headers; the interaction routes are not bound to it) and
`shared_rate_limit` (scope `shared`, "The resource is being rate limited.", a long
`retry_after`, lasting that long on the fake's clock rather than a number of times,
with the route bucket's own headers, which RestApi fills in as for every 429 a fault
answers without them).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from ibot.testing.fake_discord.constants import UNKNOWN_MESSAGE
from ibot.testing.fake_discord.model import ref_id
from ibot.testing.fake_discord.wire import error_response, json_response

# The response helpers live in wire.py; they stay importable from here.
__all__ = ["Fault", "Faults", "error_response", "json_response"]

#: The kinds of fault that answer attachment downloads (the CDN), not REST calls.
CDN_FAULTS = frozenset({"attachment_error"})


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
    expires_at: float | None = None  # on the clock of `Faults`; None: spent by count only
    bot_routes_only: bool = False  # not the interaction routes (the global limit)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.bot_routes_only and path.startswith(INTERACTION_ROUTES):
            return False
        return path == self.route if self.exact else self.route in path


#: Paths of the routes an interaction's token opens: not bound to the global limit.
INTERACTION_ROUTES = ("/interactions/", "/webhooks/")


class Faults:
    """Arms faults; the server asks `take(method, path)` before routing each request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.armed: list[Fault] = []
        self.clock = clock

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

    def global_rate_limit(self, *, times: int = 1, retry_after: float = 0.05) -> Fault:
        """The bot's global limit (50 requests/s) overrun: the next `times` requests with
        the bot token, whatever their route, get Discord's global 429 (`global: true`,
        `X-RateLimit-Global: true`, `X-RateLimit-Scope: global`, no bucket headers). The
        interaction callback and webhook routes are not bound to it (rate-limits.mdx).
        """

        def respond() -> web.Response:
            headers = {
                "Via": "1.1 google",
                "Retry-After": str(max(1, math.ceil(retry_after))),
                "X-RateLimit-Global": "true",
                "X-RateLimit-Scope": "global",
            }
            body = {
                "message": "You are being rate limited.",
                "retry_after": retry_after,
                "global": True,
                "code": 0,
            }
            return json_response(body, 429, headers)

        fault = Fault("global_rate_limit", "", None, times, respond, bot_routes_only=True)
        return self._arm(fault)

    def shared_rate_limit(
        self, route: str, *, method: str | None = None, retry_after: float = 1336.57
    ) -> Fault:
        """A shared resource (a busy channel…) limited for `retry_after` seconds of the
        clock: every matching request meanwhile gets the docs' resource 429 (scope
        `shared`, "The resource is being rate limited.", `retry_after` counting down);
        its bucket headers are the route bucket's own, which need not be spent.
        """
        expires_at = self.clock() + retry_after

        def respond() -> web.Response:
            left = max(0.0, expires_at - self.clock())
            headers = {
                "Via": "1.1 google",
                "Retry-After": str(max(1, math.ceil(left))),
                "X-RateLimit-Scope": "shared",
            }
            body = {
                "message": "The resource is being rate limited.",
                "retry_after": round(left, 3),
                "global": False,
                "code": 0,
            }
            return json_response(body, 429, headers)

        fault = Fault("shared_rate_limit", route, method, sys.maxsize, respond)
        fault.expires_at = expires_at
        return self._arm(fault)

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

    def attachment_error(self, attachment: object, *, status: int = 403, times: int = 1) -> Fault:
        """Downloading the attachment from the CDN answers `status` (403 Forbidden, 404 Not
        Found: a file Discord no longer serves) `times` times; its signed URL is valid.
        For an expired URL see `FakeDiscord.expire_attachment_urls`.
        """
        if status not in (403, 404):
            raise ValueError("the CDN's refusals are 403 and 404")
        text = "Forbidden" if status == 403 else "Not Found"
        fault = Fault(
            "attachment_error",
            f"/attachments/{ref_id(attachment)}/",
            "GET",
            times,
            lambda: web.Response(status=status, text=text),
        )
        return self._arm(fault)

    def clear(self) -> None:
        self.armed.clear()

    def take(
        self, method: str, path: str, *, cdn: bool = False
    ) -> tuple[Fault, web.Response] | None:
        """The answer of the first armed fault matching this request (REST, or a CDN
        download when `cdn`), spending one of its times; None when none matches."""
        now = self.clock()
        for fault in [f for f in self.armed if f.expires_at is not None and f.expires_at <= now]:
            self.armed.remove(fault)
        for fault in self.armed:
            if (fault.kind in CDN_FAULTS) != cdn:
                continue
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
