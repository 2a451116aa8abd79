"""REST routes under /api/v10: the route table, and the channel and message routes.

One catch-all aiohttp handler records the request, applies armed faults, checks the
bot token, counts the request against its route's rate-limit bucket (ratelimits.py:
its X-RateLimit-* headers on the answer, a 429 when spent), then routes with a small
regex table; anything unmatched is a JSON 404 kept in `FakeDiscord.unknown_routes`, so
a route the bot needs and the fake lacks shows up. The bot's permissions in a channel,
overwrites included, answer 403 50001 / 50013 as Discord does (`RestApi._require`).
`RestApi.handle` is the one place a request comes in (its body parsed by wire.py) and
its answer goes out, faults and Discord's error bodies included.

The table lists every route the fake serves. The channel, guild, thread, message,
reaction and typing routes are written here; the others live where their job does:
the bot's user, application and slash commands in application_routes.py, the
interaction callback and webhook follow-ups and edits in interaction_routes.py. Every
route that writes a message takes its body through message_bodies.py, which checks it
against Discord's limits (validation.py).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from ibot.testing import spec_violations
from ibot.testing.fake_discord.application_routes import ApplicationRoutes
from ibot.testing.fake_discord.constants import (
    ADD_REACTIONS,
    CANNOT_EDIT_OTHERS_MESSAGE,
    INVALID_FORM_BODY,
    MANAGE_THREADS,
    MISSING_ACCESS,
    MISSING_PERMISSIONS,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    THREAD_ARCHIVED,
    UNKNOWN_CHANNEL,
    UNKNOWN_GUILD,
    UNKNOWN_MEMBER,
    UNKNOWN_MESSAGE,
    VIEW_CHANNEL,
    ChannelType,
)
from ibot.testing.fake_discord.interaction_routes import InteractionRoutes
from ibot.testing.fake_discord.message_bodies import apply_edit, new_message_files
from ibot.testing.fake_discord.model import FakeChannel, FakeGuild, StoredMessage
from ibot.testing.fake_discord.ratelimits import template
from ibot.testing.fake_discord.validation import leaf_error
from ibot.testing.fake_discord.wire import (
    ApiError,
    RecordedRequest,
    Upload,
    bot_token,
    error_response,
    json_response,
    no_content,
    read_body,
)

if TYPE_CHECKING:
    from ibot.testing.fake_discord.server import FakeDiscord

# RecordedRequest, Upload and ApiError moved to wire.py; still importable from here.
__all__ = ["ApiError", "Handler", "RecordedRequest", "RestApi", "Route", "Upload"]

Handler = Callable[..., Awaitable[web.Response]]
#: (method, path pattern, handler called with the pattern's groups, needs the bot token)
Route = tuple[str, re.Pattern[str], Handler, bool]
_ID = r"(?P<{}>\d+)"


def _p(template: str) -> re.Pattern[str]:
    """'/channels/{cid}/messages' → a regex with a named group per id."""
    return re.compile(re.sub(r"\{(\w+)\}", lambda m: _ID.format(m.group(1)), template))


class RestApi:
    """The /api/v10 handler of one FakeDiscord: the route table, channel and message routes."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        app = ApplicationRoutes(fake)
        hook = InteractionRoutes(fake)
        w = r"(?P<token>[^/]+)"
        app_cmds = "/applications/{app}/commands"
        guild_cmds = "/applications/{app}/guilds/{gid}/commands"
        webhook_message = rf"/webhooks/(?P<app>\d+)/{w}/messages/(?P<mid>@original|\d+)"
        self.routes: list[Route] = [
            ("GET", _p("/users/@me"), app.get_me, True),
            ("GET", _p("/users/{uid}"), app.get_user, True),
            ("GET", _p("/gateway"), app.get_gateway, False),
            ("GET", _p("/gateway/bot"), app.get_gateway_bot, True),
            ("GET", _p("/oauth2/applications/@me"), app.get_application, True),
            ("GET", _p(app_cmds), app.list_commands, True),
            ("POST", _p(app_cmds), app.upsert_command, True),
            ("PUT", _p(app_cmds), app.overwrite_commands, True),
            ("GET", _p(app_cmds + "/{cmd}"), app.get_command, True),
            ("PATCH", _p(app_cmds + "/{cmd}"), app.edit_command, True),
            ("DELETE", _p(app_cmds + "/{cmd}"), app.delete_command, True),
            ("GET", _p(guild_cmds), app.list_commands, True),
            ("POST", _p(guild_cmds), app.upsert_command, True),
            ("PUT", _p(guild_cmds), app.overwrite_commands, True),
            ("GET", _p(guild_cmds + "/{cmd}"), app.get_command, True),
            ("PATCH", _p(guild_cmds + "/{cmd}"), app.edit_command, True),
            ("DELETE", _p(guild_cmds + "/{cmd}"), app.delete_command, True),
            ("GET", _p("/channels/{cid}"), self.get_channel, True),
            ("PATCH", _p("/channels/{cid}"), self.edit_channel, True),
            ("GET", _p("/channels/{cid}/messages"), self.get_history, True),
            ("POST", _p("/channels/{cid}/messages"), self.create_message, True),
            ("GET", _p("/channels/{cid}/messages/{mid}"), self.get_message, True),
            ("PATCH", _p("/channels/{cid}/messages/{mid}"), self.edit_message, True),
            ("DELETE", _p("/channels/{cid}/messages/{mid}"), self.delete_message, True),
            (
                "PUT",
                re.compile(
                    r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)/reactions/(?P<emoji>[^/]+)/@me"
                ),
                self.add_reaction,
                True,
            ),
            (
                "GET",
                re.compile(
                    r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)/reactions/(?P<emoji>[^/]+)"
                ),
                self.reaction_users,
                True,
            ),
            ("POST", _p("/channels/{cid}/typing"), self.typing, True),
            ("GET", _p("/channels/{cid}/threads/archived/public"), self.archived_threads, True),
            ("GET", _p("/guilds/{gid}"), self.get_guild, True),
            ("GET", _p("/guilds/{gid}/channels"), self.get_guild_channels, True),
            ("GET", _p("/guilds/{gid}/roles"), self.get_roles, True),
            ("GET", _p("/guilds/{gid}/members/{uid}"), self.get_member, True),
            ("GET", _p("/guilds/{gid}/threads/active"), self.active_threads, True),
            ("POST", re.compile(rf"/interactions/(?P<iid>\d+)/{w}/callback"), hook.callback, False),
            ("POST", re.compile(rf"/webhooks/(?P<app>\d+)/{w}"), hook.followup, False),
            ("GET", re.compile(webhook_message), hook.get_webhook_message, False),
            ("PATCH", re.compile(webhook_message), hook.edit_webhook_message, False),
            ("DELETE", re.compile(webhook_message), hook.delete_webhook_message, False),
        ]

    # -- plumbing ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """Every /api/v10 request: parsed and recorded, answered, its status recorded."""
        fake = self.fake
        path = "/" + request.match_info["tail"]
        body, uploads = await read_body(request)
        call = RecordedRequest(request.method, path, dict(request.query), body, uploads)
        fake.requests.append(call)
        try:
            response = await self._answer(request, call)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.errors)
        call.status = response.status
        if spec_violations.enabled():  # the test suite's check against Discord's OpenAPI file
            from ibot.testing.openapi_check import check_discord_exchange

            check_discord_exchange(request.method, path, request.content_type, body, response)
        fake._signal.notify()
        return response

    async def _answer(self, request: web.Request, call: RecordedRequest) -> web.Response:
        """Armed faults first, then the route, counted against its rate-limit bucket
        (ratelimits.py): a spent bucket answers 429 and the route does not run; every
        answer of a route carries its bucket's X-RateLimit-* headers."""
        found = self._route(call)
        limits = self.fake.rate_limits
        faulted = self.fake.faults.take(call.method, call.path)
        if faulted is not None:
            fault, response = faulted
            call.fault = fault.kind
            if found is not None and limits.enabled and response.status == 429:
                self._complete_429(response, call.method, found[0], found[3])
            return response
        if found is None:
            self.fake.unknown_routes.append(call)
            return error_response(404, 0, "404: Not Found")
        pattern, handler, needs_auth, groups = found
        if needs_auth and not self.fake._token_ok(bot_token(request)):
            return error_response(401, 0, "401: Unauthorized")
        if not limits.enabled:
            return await handler(call, **groups)
        verdict = limits.take(call.method, template(pattern), groups)
        if not verdict.allowed:
            return limits.too_many(verdict)
        try:
            response = await handler(call, **groups)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.errors)
        response.headers.update(verdict.headers)
        return response

    def _route(
        self, call: RecordedRequest
    ) -> tuple[re.Pattern[str], Handler, bool, dict[str, str]] | None:
        for method, pattern, handler, needs_auth in self.routes:
            match = pattern.fullmatch(call.path)
            if match is not None and method == call.method:
                return pattern, handler, needs_auth, match.groupdict()
        return None

    def _complete_429(
        self, response: web.Response, method: str, pattern: re.Pattern[str], groups: dict[str, str]
    ) -> None:
        """A fault's per-route or shared 429 with the route bucket's headers it left out
        (X-RateLimit-Bucket always; all of them for a shared one); a global 429 has none."""
        if response.headers.get("X-RateLimit-Global") == "true":
            return
        for name, value in self.fake.rate_limits.peek(method, template(pattern), groups).items():
            response.headers.setdefault(name, value)

    # -- channels, guilds, threads ------------------------------------------------

    def _channel(self, cid: str | int) -> FakeChannel:
        """The channel, which the bot must be able to see (403 50001 otherwise)."""
        channel = self.fake.channels.get(int(cid))
        if channel is None:
            raise ApiError(404, UNKNOWN_CHANNEL, "Unknown Channel")
        self._require(channel)
        return channel

    def _require(self, channel: FakeChannel, permission: int = 0) -> None:
        """The bot's permissions in the channel, its overwrites included: 403 Missing
        Access (50001) without VIEW_CHANNEL, 403 Missing Permissions (50013) without
        `permission`."""
        guild = self.fake.guilds[channel.guild_id]
        bits = guild.permissions_in(guild.members[self.fake.bot_user.id], channel)
        if not bits & VIEW_CHANNEL:
            raise ApiError(403, MISSING_ACCESS, "Missing Access")
        if bits & permission != permission:
            raise ApiError(403, MISSING_PERMISSIONS, "Missing Permissions")

    def _guild(self, gid: str) -> FakeGuild:
        guild = self.fake.guilds.get(int(gid))
        if guild is None:
            raise ApiError(404, UNKNOWN_GUILD, "Unknown Guild")
        return guild

    async def get_channel(self, call: RecordedRequest, cid: str) -> web.Response:
        return json_response(self._channel(cid).payload())

    async def edit_channel(self, call: RecordedRequest, cid: str) -> web.Response:
        """Renames; for threads also archived, locked and applied_tags (THREAD_UPDATE).

        channel.mdx, JSON Params (Thread): only unarchiving an unlocked thread needs no
        more than SEND_MESSAGES; any other thread edit needs MANAGE_THREADS (403 50013),
        and an archived thread must be unarchived by the same request (400 50083)."""
        channel = self._channel(cid)
        body = call.json or {}
        if channel.is_thread:
            self._check_thread_edit(channel, body)
        if "name" in body:
            channel.name = body["name"]
        if channel.is_thread:
            if "applied_tags" in body:
                channel.applied_tags = [int(t) for t in body["applied_tags"]]
            for key in ("archived", "locked"):
                if key in body:
                    setattr(channel, key, bool(body[key]))
        elif "topic" in body:
            channel.topic = body["topic"]
        event = "THREAD_UPDATE" if channel.is_thread else "CHANNEL_UPDATE"
        self.fake.gateway.dispatch(event, channel.payload(), None)
        return json_response(channel.payload())

    async def get_guild(self, call: RecordedRequest, gid: str) -> web.Response:
        guild = self._guild(gid)
        payload = guild.create_payload([])
        for key in ("members", "channels", "threads", "presences", "voice_states"):
            payload.pop(key)
        payload.update(  # what GET answers and GUILD_CREATE lacks (GuildWithCountsResponse)
            region="deprecated",
            home_header=None,
            widget_enabled=False,
            widget_channel_id=None,
            max_members=500_000,
            max_presences=None,
            max_video_channel_users=25,
            max_stage_video_channel_users=50,
            premium_subscription_count=0,
            nsfw=False,
        )
        return json_response(payload)

    async def get_guild_channels(self, call: RecordedRequest, gid: str) -> web.Response:
        guild = self._guild(gid)
        return json_response([c.payload() for c in guild.channels.values() if not c.is_thread])

    async def get_roles(self, call: RecordedRequest, gid: str) -> web.Response:
        return json_response([r.payload() for r in self._guild(gid).roles.values()])

    async def get_member(self, call: RecordedRequest, gid: str, uid: str) -> web.Response:
        member = self._guild(gid).members.get(int(uid))
        if member is None:
            raise ApiError(404, UNKNOWN_MEMBER, "Unknown Member")
        return json_response(member.payload())

    async def active_threads(self, call: RecordedRequest, gid: str) -> web.Response:
        guild = self._guild(gid)
        threads = [c.payload() for c in guild.channels.values() if c.is_thread and not c.archived]
        return json_response({"threads": threads, "members": [], "has_more": False})

    async def archived_threads(self, call: RecordedRequest, cid: str) -> web.Response:
        parent = self._channel(cid)
        threads = [
            t
            for t in self.fake.channels.values()
            if t.is_thread and t.parent_id == parent.id and t.archived
        ]
        threads.sort(key=lambda t: archived_at(t.archive_timestamp), reverse=True)
        if "before" in call.query:  # "threads archived before this timestamp" (channel.mdx)
            try:
                before = archived_at(call.query["before"])
            except ValueError:
                raise ApiError(400, INVALID_FORM_BODY, "Invalid Form Body") from None
            threads = [t for t in threads if archived_at(t.archive_timestamp) < before]
        limit = query_limit(call, default=50, low=2, high=100)  # openapi.json: 2 to 100
        return json_response(
            {
                "threads": [t.payload() for t in threads[:limit]],
                "members": [],
                "has_more": len(threads) > limit,
            }
        )

    # -- messages -------------------------------------------------------------------

    async def create_message(self, call: RecordedRequest, cid: str) -> web.Response:
        channel = self._channel(cid)
        if channel.type == ChannelType.GUILD_FORUM:
            raise ApiError(400, 50008, "Cannot send messages in a non-text channel")
        self._require(channel, send_permission(channel))
        if channel.is_thread:
            self._check_thread_writable(channel)
        body = call.json or {}
        files = new_message_files(self.fake, call, body)
        stored = self.fake.message_store.create(
            channel,
            self.fake.bot_user,
            content=body.get("content") or "",
            embeds=body.get("embeds") or [],
            components=body.get("components") or [],
            files=files,
            allowed_mentions=body.get("allowed_mentions"),
            flags=int(body.get("flags") or 0),
            request=body,
            reply_to=(body.get("message_reference") or {}).get("message_id"),
            nonce=body.get("nonce"),
        )
        if channel.is_thread and channel.archived:
            # "Sending a message will automatically unarchive the thread" (threads.mdx)
            self.fake.world.archive_thread(channel, archived=False)
        self.fake.message_store.dispatch("MESSAGE_CREATE", stored)
        return json_response(stored.data)

    def _check_thread_edit(self, thread: FakeChannel, body: dict[str, Any]) -> None:
        guild = self.fake.guilds[thread.guild_id]
        bot = guild.members[self.fake.bot_user.id]
        unarchive_only = set(body) <= {"archived", "locked"} and body.get("archived") is False
        unarchive_only = unarchive_only and not body.get("locked", thread.locked)
        if not unarchive_only and not guild.permissions_in(bot, thread) & MANAGE_THREADS:
            raise ApiError(403, MISSING_PERMISSIONS, "Missing Permissions")
        if thread.archived and body.get("archived") is not False:
            raise ApiError(400, THREAD_ARCHIVED, "Thread is archived")

    def _check_thread_writable(self, thread: FakeChannel) -> None:
        """threads.mdx, Locked Threads: without MANAGE_THREADS a locked thread takes no
        message (403 50013 Missing Permissions), and a locked archived one cannot be
        unarchived by posting (400 50083 Thread is archived)."""
        guild = self.fake.guilds[thread.guild_id]
        bot = guild.members[self.fake.bot_user.id]
        if not thread.locked or guild.permissions_in(bot, thread) & MANAGE_THREADS:
            return
        if thread.archived:
            raise ApiError(400, THREAD_ARCHIVED, "Thread is archived")
        raise ApiError(403, MISSING_PERMISSIONS, "Missing Permissions")

    def _message(self, cid: str, mid: str) -> StoredMessage:
        channel = self._channel(cid)
        stored = self.fake.message_store.find(int(mid))
        if stored is None or stored.deleted or stored.channel_id != channel.id or stored.ephemeral:
            raise ApiError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return stored

    async def get_message(self, call: RecordedRequest, cid: str, mid: str) -> web.Response:
        return json_response(self.fake.message_store.rest_view(self._message(cid, mid)))

    async def get_history(self, call: RecordedRequest, cid: str) -> web.Response:
        """Newest first; `after` takes the oldest messages past the cursor, as Discord does."""
        channel = self._channel(cid)
        visible = self.fake.history(channel)  # oldest first
        limit = int(call.query.get("limit", 50))
        if not 1 <= limit <= 100:
            low = limit < 1
            code, bound = ("NUMBER_TYPE_MIN", "greater") if low else ("NUMBER_TYPE_MAX", "less")
            message = f"int value should be {bound} than or equal to {1 if low else 100}."
            raise ApiError(
                400, INVALID_FORM_BODY, "Invalid Form Body", {"limit": leaf_error(code, message)}
            )
        q = call.query
        if "around" in q:
            pivot, half = int(q["around"]), limit // 2
            older = [m for m in visible if m.id < pivot][-half:] if half else []
            chosen = older + [m for m in visible if m.id >= pivot][: limit - len(older)]
        elif "before" in q:
            chosen = [m for m in visible if m.id < int(q["before"])][-limit:]
        elif "after" in q:
            chosen = [m for m in visible if m.id > int(q["after"])][:limit]
        else:
            chosen = visible[-limit:]
        return json_response([self.fake.message_store.rest_view(m) for m in reversed(chosen)])

    async def edit_message(self, call: RecordedRequest, cid: str, mid: str) -> web.Response:
        stored = self._message(cid, mid)
        if stored.author_id != self.fake.bot_user.id:
            raise ApiError(
                403, CANNOT_EDIT_OTHERS_MESSAGE, "Cannot edit a message authored by another user"
            )
        apply_edit(self.fake, stored, call)
        return json_response(stored.data)

    async def delete_message(self, call: RecordedRequest, cid: str, mid: str) -> web.Response:
        self.fake.message_store.delete(self._message(cid, mid))
        return no_content()

    async def add_reaction(
        self, call: RecordedRequest, cid: str, mid: str, emoji: str
    ) -> web.Response:
        stored = self._message(cid, mid)
        self._require(self._channel(cid), ADD_REACTIONS)
        self.fake.message_store.react(stored, self.fake.bot_user, unquote(emoji))
        return no_content()

    async def reaction_users(
        self, call: RecordedRequest, cid: str, mid: str, emoji: str
    ) -> web.Response:
        """Get Reactions (message.mdx): the users who put this emoji, by id ascending,
        `limit` (1-100, default 25) at a time after the user id `after`; `type` 1
        (burst) finds none, as nobody super-reacts here."""
        stored = self._message(cid, mid)
        limit = query_limit(call, default=25, low=1, high=100)
        after = int(call.query.get("after", 0))
        if call.query.get("type", "0") != "0":
            return json_response([])
        users = sorted(stored.reactors.get(unquote(emoji), []))
        chosen = [self.fake.users[u].payload() for u in users if u > after][:limit]
        return json_response(chosen)

    async def typing(self, call: RecordedRequest, cid: str) -> web.Response:
        channel = self._channel(cid)
        self._require(channel, send_permission(channel))
        return no_content()


def query_limit(call: RecordedRequest, *, default: int, low: int, high: int) -> int:
    """The request's `limit`, or Discord's form error for one out of [low, high]."""
    try:
        limit = int(call.query.get("limit", default))
    except ValueError:
        raise ApiError(400, INVALID_FORM_BODY, "Invalid Form Body") from None
    if not low <= limit <= high:
        small = limit < low
        code, bound = ("NUMBER_TYPE_MIN", "greater") if small else ("NUMBER_TYPE_MAX", "less")
        message = f"int value should be {bound} than or equal to {low if small else high}."
        raise ApiError(
            400, INVALID_FORM_BODY, "Invalid Form Body", {"limit": leaf_error(code, message)}
        )
    return limit


def archived_at(stamp: str) -> datetime:
    """An ISO8601 timestamp as an aware datetime (a `Z` suffix or none read as UTC)."""
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def send_permission(channel: FakeChannel) -> int:
    """SEND_MESSAGES, or in a thread SEND_MESSAGES_IN_THREADS: "The SEND_MESSAGES
    permission has no effect in threads" (threads.mdx, Permissions)."""
    return SEND_MESSAGES_IN_THREADS if channel.is_thread else SEND_MESSAGES
