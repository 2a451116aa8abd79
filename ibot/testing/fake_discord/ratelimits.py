"""Discord's per-route rate limits, kept as Discord keeps them (rate-limits.mdx).

Every REST route has a bucket: a limit of requests per window, counted per *top-level
resource* of the path (the channel, the guild, or the webhook id + token of an
interaction), so `/channels/1/messages` and `/channels/2/messages` are limited apart.
Each answer carries the bucket's state, as Discord's "most API requests" do:
`X-RateLimit-Limit`, `-Remaining`, `-Reset` (epoch seconds), `-Reset-After` (seconds)
and `-Bucket`, a hash of the route that leaves the top-level resource out, hence the
same for every channel. A client that reads them waits before it overruns a bucket;
one that overruns it gets Discord's 429: the body `{message, retry_after, global}`
(and `code`, which Discord's OpenAPI file requires), `Retry-After`, the bucket headers
with Remaining 0 and `X-RateLimit-Scope: user`, and `Via` (nextcord reads a 429 without
it as a Cloudflare ban). A refused request does not run and does not count.

The limits are "sensible", not Discord's secret numbers: 5 messages per 5 s per
channel (the figure Discord's docs and bots commonly meet), 5 webhook messages per 2 s
per interaction, 1 reaction per 0.25 s, generous 50 per second elsewhere. `clock` is
injectable; the wall-clock `X-RateLimit-Reset` is derived from it. The global limit
and the shared-resource limit are faults a test arms (faults.py), not defaults.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from ibot.testing.fake_discord.wire import json_response

__all__ = ["DEFAULT_LIMIT", "ROUTE_LIMITS", "Limit", "RateLimits", "bucket_hash", "template"]


@dataclass(frozen=True, slots=True)
class Limit:
    """`requests` per window of `per_s` seconds (the window opens at its first request)."""

    requests: int
    per_s: float


#: (method, route template) → its limit; a route not listed has DEFAULT_LIMIT.
ROUTE_LIMITS: dict[tuple[str, str], Limit] = {
    ("POST", "/channels/{cid}/messages"): Limit(5, 5.0),
    ("PATCH", "/channels/{cid}/messages/{mid}"): Limit(5, 5.0),
    ("DELETE", "/channels/{cid}/messages/{mid}"): Limit(5, 1.0),
    ("PUT", "/channels/{cid}/messages/{mid}/reactions/{emoji}/@me"): Limit(1, 0.25),
    ("POST", "/channels/{cid}/typing"): Limit(5, 5.0),
    ("PATCH", "/channels/{cid}"): Limit(10, 10.0),
    ("POST", "/webhooks/{app}/{token}"): Limit(5, 2.0),
    ("PATCH", "/webhooks/{app}/{token}/messages/{mid}"): Limit(5, 2.0),
}
DEFAULT_LIMIT = Limit(50, 1.0)

#: Path parameters that are top-level resources (rate-limits.mdx: channels, guilds, and
#: webhooks, "webhook_id or webhook_id + webhook_token"; an interaction's callback is
#: limited per interaction).
MAJOR_PARAMETERS = (("cid",), ("gid",), ("app", "token"), ("iid", "token"))

_GROUP = re.compile(r"\(\?P<(\w+)>(?:[^()]|\([^()]*\))*\)")


def template(pattern: re.Pattern[str]) -> str:
    """A route regex of rest.py as its template: `(?P<cid>\\d+)` → `{cid}`."""
    return _GROUP.sub(lambda m: "{" + m.group(1) + "}", pattern.pattern)


def bucket_hash(method: str, route: str) -> str:
    """What `X-RateLimit-Bucket` says: the route's hash, without its resource ids."""
    return hashlib.md5(f"{method} {route}".encode(), usedforsecurity=False).hexdigest()


def major_of(groups: Mapping[str, str | None]) -> str:
    for names in MAJOR_PARAMETERS:
        if all(groups.get(n) for n in names):
            return ":".join(str(groups[n]) for n in names)
    return ""


@dataclass
class _Window:
    opened_at: float
    used: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """One request's standing in its bucket: the headers to send, and whether it may run."""

    headers: dict[str, str]
    allowed: bool
    retry_after: float


class RateLimits:
    """The buckets of one FakeDiscord; `enabled = False` turns the limits and headers off."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.enabled = True
        self.limits: dict[tuple[str, str], Limit] = dict(ROUTE_LIMITS)
        self.default = DEFAULT_LIMIT
        self._windows: dict[tuple[str, str], _Window] = {}
        #: every 429 the buckets answered: (method, route template, major parameter)
        self.refused: list[tuple[str, str, str]] = []

    def limit_of(self, method: str, route: str) -> Limit:
        return self.limits.get((method, route), self.default)

    def take(self, method: str, route: str, groups: Mapping[str, str | None]) -> Verdict:
        """Count the request against its bucket, or refuse it when the bucket is spent."""
        verdict = self._standing(method, route, groups, consume=True)
        if not verdict.allowed:
            self.refused.append((method, route, major_of(groups)))
        return verdict

    def peek(self, method: str, route: str, groups: Mapping[str, str | None]) -> dict[str, str]:
        """The bucket's headers as they stand, without counting a request."""
        return self._standing(method, route, groups, consume=False).headers

    def _standing(
        self, method: str, route: str, groups: Mapping[str, str | None], *, consume: bool
    ) -> Verdict:
        limit = self.limit_of(method, route)
        now = self.clock()
        key = (bucket_hash(method, route), major_of(groups))
        window = self._windows.get(key)
        if window is None or now - window.opened_at >= limit.per_s:
            window = _Window(now)
            if consume:
                self._windows[key] = window
        reset_after = max(0.0, window.opened_at + limit.per_s - now)
        allowed = window.used < limit.requests
        if consume and allowed:
            window.used += 1
        remaining = max(0, limit.requests - window.used)
        headers = {
            "X-RateLimit-Limit": str(limit.requests),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": key[0],
        }
        return Verdict(headers, allowed, reset_after)

    @staticmethod
    def too_many(verdict: Verdict) -> web.Response:
        """Discord's per-route 429 for a spent bucket (the user's own limit)."""
        headers = {
            **verdict.headers,
            "Retry-After": str(max(1, math.ceil(verdict.retry_after))),
            "X-RateLimit-Scope": "user",
            "Via": "1.1 google",
        }
        body = {
            "message": "You are being rate limited.",
            "retry_after": round(verdict.retry_after, 3),
            "global": False,
            "code": 0,
        }
        return json_response(body, 429, headers)
