"""FakeDiscord: the facade tests drive, and the aiohttp app that serves the bot.

The jobs live in their own modules and this class wires them together behind the one
object tests, the harness and the demo use: the world builder (world.py: users, guilds,
channels, threads, attachments), the message store (messages.py), the REST routes
(rest.py, with application_routes.py and interaction_routes.py; requests and answers
in wire.py, Discord's message limits in validation.py), the gateway (gateway.py),
interactions (interactions.py) and faults (faults.py). What stays here is what
belongs to the server as a whole: the socket and the aiohttp app, the bot token and
the developer-portal settings, the registered commands and invoked interactions, the
users' actions (each one changes the world or the store, then waits until every
connected client was sent the events), and waiting for the bot.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

from aiohttp import web

from ibot.testing.fake_discord.cdn import EXPIRED_TEXT, Cdn
from ibot.testing.fake_discord.constants import (
    APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED,
    APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED,
    APP_FLAG_GATEWAY_PRESENCE_LIMITED,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    INTERACTION_TOKEN_LIFETIME_S,
    PRIVILEGED_INTENTS,
    Intent,
)
from ibot.testing.fake_discord.faults import Faults
from ibot.testing.fake_discord.gateway import Gateway
from ibot.testing.fake_discord.interactions import (
    InteractionHandle,
    build_component_interaction,
    build_interaction,
)
from ibot.testing.fake_discord.messages import MessageStore
from ibot.testing.fake_discord.model import (
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    Json,
    Snowflakes,
    StoredAttachment,
    StoredMessage,
    ref_id,
)
from ibot.testing.fake_discord.ratelimits import RateLimits
from ibot.testing.fake_discord.rest import RestApi
from ibot.testing.fake_discord.wire import RecordedRequest
from ibot.testing.fake_discord.world import World

T = TypeVar("T")

#: When a forum post's starter message arrives (`FakeDiscord.create_forum_thread`).
StarterTiming = Literal["before", "after", "late"]


class Signal:
    """Wakes every waiter whenever the fake's state changes (no polling, no sleeps)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(
        self,
        predicate: Callable[[], T | None],
        timeout: float | None,  # noqa: ASYNC109
    ) -> T:
        async with asyncio.timeout(timeout):
            while True:
                event = self._event  # taken before the check, so no wake-up is lost
                result = predicate()
                if result:
                    return result
                await event.wait()


class FakeDiscord:
    """A Discord-compatible REST + gateway server on 127.0.0.1 (see package docstring)."""

    def __init__(
        self,
        *,
        token: str | None = None,
        bot_name: str = "iBot",
        privileged_intents: int = PRIVILEGED_INTENTS,
        ack_window_s: float = 3.0,
        heartbeat_interval_ms: int = 41_250,
    ) -> None:
        """`token`: the only bot token accepted (None: any). `privileged_intents`: those
        enabled in the developer portal (asking for others closes the gateway with 4014);
        a test may change the attribute at any time, as a developer flips the switch: the
        next IDENTIFY and READY, and every REST read of a message, follow it.
        `ack_window_s`: how long the bot has to acknowledge an interaction.

        `clock` (seconds, monotonic) is the fake's time for what Discord times: the
        acknowledgement window, the 15-minute life of an interaction token
        (`token_lifetime_s`), the rate-limit buckets (`rate_limits`) and the armed
        faults that last a while; a test may replace it at any time to move time on.
        """
        self.token = token
        self.privileged_intents = privileged_intents
        self.ack_window_s = ack_window_s
        self.token_lifetime_s: float = INTERACTION_TOKEN_LIFETIME_S
        self.clock: Callable[[], float] = time.monotonic
        self.rate_limits = RateLimits(clock=lambda: self.clock())
        self._snowflakes = Snowflakes()
        self._signal = Signal()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))  # bound now so URLs exist before start()
        self._runner: web.AppRunner | None = None
        self._commands: dict[int | None, list[Json]] = {}
        self._interactions_by_id: dict[int, InteractionHandle] = {}
        self._interactions_by_token: dict[str, InteractionHandle] = {}
        self.requests: list[RecordedRequest] = []
        self.unknown_routes: list[RecordedRequest] = []
        self.downloads: list[RecordedRequest] = []  # attachment downloads (the CDN)
        self.faults = Faults(clock=lambda: self.clock())
        self.cdn = Cdn()
        self._late_starters: dict[int, tuple[FakeUser, str, list[StoredAttachment]]] = {}
        self.gateway = Gateway(self, heartbeat_interval_ms)
        self.world = World(self, bot_name)
        self.message_store = MessageStore(self)
        self._rest = RestApi(self)

    # -- lifecycle -------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """Set `nextcord.http.Route.BASE` to this."""
        return f"{self.http_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def application_id(self) -> int:
        return self.bot_user.id

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/attachments/{aid}/{filename}", self._serve_attachment)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()
        return self

    async def stop(self) -> None:
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._sock.close()

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the world (World in world.py owns it and documents each method) ---------

    @property
    def users(self) -> dict[int, FakeUser]:
        return self.world.users

    @property
    def guilds(self) -> dict[int, FakeGuild]:
        return self.world.guilds

    @property
    def channels(self) -> dict[int, FakeChannel]:
        """Every channel by id, threads included."""
        return self.world.channels

    @property
    def attachments(self) -> dict[int, StoredAttachment]:
        return self.world.attachments

    @property
    def bot_user(self) -> FakeUser:
        return self.world.bot_user

    @property
    def owner_user(self) -> FakeUser:
        """The application's owner (GET /oauth2/applications/@me)."""
        return self.world.owner_user

    def create_user(self, name: str, *, bot: bool = False) -> FakeUser:
        return self.world.create_user(name, bot=bot)

    def create_guild(
        self,
        name: str,
        *,
        owner: FakeUser | FakeMember | str | None = None,
        everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
    ) -> FakeGuild:
        return self.world.create_guild(
            name,
            owner=owner,
            everyone_permissions=everyone_permissions,
            bot_permissions=bot_permissions,
        )

    def create_role(self, guild: FakeGuild | int, name: str, *, permissions: int = 0) -> FakeRole:
        return self.world.create_role(guild, name, permissions=permissions)

    def create_member(
        self,
        guild: FakeGuild | int,
        user: FakeUser | str,
        *,
        roles: Iterable[FakeRole | int] = (),
        bot: bool = False,
        nick: str | None = None,
    ) -> FakeMember:
        return self.world.create_member(guild, user, roles=roles, bot=bot, nick=nick)

    def create_text_channel(
        self, guild: FakeGuild | int, name: str, *, topic: str | None = None
    ) -> FakeChannel:
        return self.world.create_text_channel(guild, name, topic=topic)

    def create_forum(
        self,
        guild: FakeGuild | int,
        name: str,
        *,
        tags: Iterable[str | Mapping[str, Any]] = (),
        topic: str | None = None,
    ) -> FakeChannel:
        return self.world.create_forum(guild, name, tags=tags, topic=topic)

    def add_attachment(
        self, filename: str, data: bytes, content_type: str | None = None
    ) -> StoredAttachment:
        return self.world.add_attachment(filename, data, content_type)

    # -- things users do -------------------------------------------------------

    async def create_forum_thread(
        self,
        forum: FakeChannel | int,
        *,
        author: FakeMember | FakeUser,
        title: str,
        content: str = "",
        tags: Iterable[str] = (),
        attachments: Iterable[StoredAttachment] = (),
        starter: StarterTiming = "after",
        starter_misses: int = 0,
        announce: bool = True,
    ) -> FakeChannel:
        """A forum post: thread (type 11) + starter message with the thread's id.

        Returns once every connected client was sent the events. When the starter
        message arrives varies on Discord, so `starter` chooses: "after" (default):
        THREAD_CREATE (`newly_created`), then the starter's MESSAGE_CREATE; "before": the
        other way round; "late": THREAD_CREATE only, and reading the starter answers 404
        10008 Unknown Message until `deliver_starter(thread)`. `starter_misses`: its
        first N reads answer 404 10008 all the same (`faults.starter_message_race`, armed
        before anything is sent). `announce=False`: nothing is sent (a forum the bot
        cannot see); `add_bot_to_thread` announces the thread later, as Discord does.
        """
        thread = self.world.open_thread(forum, author, title, tags)
        user = self.world.member(self.guilds[thread.guild_id], author).user
        if starter_misses:
            self.faults.starter_message_race(thread, times=starter_misses)
        if starter == "late":
            self._late_starters[thread.id] = (user, content, list(attachments))
            if announce:
                self._announce_thread(thread)
            await self.flush()
            return thread
        stored = self.message_store.create(
            thread, user, content=content, files=list(attachments), message_id=thread.id
        )
        if announce and starter == "before":
            self.message_store.dispatch("MESSAGE_CREATE", stored)
            self._announce_thread(thread)
        elif announce:
            self._announce_thread(thread)
            self.message_store.dispatch("MESSAGE_CREATE", stored)
        await self.flush()
        return thread

    def _announce_thread(self, thread: FakeChannel) -> None:
        self.gateway.dispatch("THREAD_CREATE", {**thread.payload(), "newly_created": True}, None)

    async def deliver_starter(self, thread: FakeChannel | int) -> StoredMessage:
        """The starter message of a `starter="late"` post arrives: readable from now on,
        and its MESSAGE_CREATE is dispatched."""
        target = self.channels[ref_id(thread)]
        user, content, files = self._late_starters.pop(target.id)
        stored = self.message_store.create(
            target, user, content=content, files=files, message_id=target.id
        )
        self.message_store.dispatch("MESSAGE_CREATE", stored)
        await self.flush()
        return stored

    async def add_bot_to_thread(self, thread: FakeChannel | int) -> None:
        """The bot is added to a thread that already exists (a member @-mentions it, a
        moderator adds it): THREAD_CREATE *without* `newly_created` (gateway-events.mdx,
        Thread Create: "relevant to the current user, or when the current user is added
        to a thread"; `newly_created` only "when a thread is created")."""
        target = self.channels[ref_id(thread)]
        self.gateway.dispatch("THREAD_CREATE", target.payload(), None)
        await self.flush()

    async def post_message(
        self,
        channel: FakeChannel | int,
        author: FakeMember | FakeUser,
        content: str = "",
        *,
        attachments: Iterable[StoredAttachment] = (),
        mentions: Iterable[FakeMember | FakeUser] = (),
        reply_to: StoredMessage | int | None = None,
    ) -> StoredMessage:
        """A user's message; users in `mentions` are @-mentioned at the start of the text
        (unless the text already mentions them). Dispatches MESSAGE_CREATE.
        """
        target = self.channels[ref_id(channel)]
        user = self.world.member(self.guilds[target.guild_id], author).user
        tags = [f"<@{ref_id(m)}>" for m in mentions if f"<@{ref_id(m)}>" not in content]
        text = " ".join([*tags, content]) if tags else content
        stored = self.message_store.create(
            target,
            user,
            content=text,
            files=list(attachments),
            reply_to=ref_id(reply_to) if reply_to is not None else None,
        )
        self.message_store.dispatch("MESSAGE_CREATE", stored)
        await self.flush()
        return stored

    async def react(
        self, message: StoredMessage | int, who: FakeMember | FakeUser, emoji: str
    ) -> None:
        """`who` reacts to the message with a unicode `emoji` (MessageStore.react). Not
        in an archived thread: "Users cannot … add reactions … in archived threads"
        (threads.mdx), so asking for one is the test's mistake (ValueError)."""
        stored = self.message_store.get(message)
        channel = self.channels[stored.channel_id]
        if channel.is_thread and channel.archived:
            raise ValueError(f"thread {channel.id} is archived: nobody can react there")
        user = self.world.member(self.guilds[channel.guild_id], who).user
        self.message_store.react(stored, user, emoji)
        await self.flush()

    async def delete_message(self, message: StoredMessage | int) -> None:
        """Its author or a moderator deletes the message: MESSAGE_DELETE; REST answers
        404 10008 for it from now on (a deleted starter leaves its thread in place)."""
        self.message_store.delete(self.message_store.get(message))
        await self.flush()

    async def archive_thread(self, thread: FakeChannel | int, *, archived: bool = True) -> None:
        self.world.archive_thread(thread, archived=archived)
        await self.flush()

    async def tag_thread(self, thread: FakeChannel | int, tags: Iterable[str]) -> None:
        """A moderator sets the thread's applied tags (names; see `World.tag_thread`)."""
        self.world.tag_thread(thread, tags)
        await self.flush()

    async def lock_thread(self, thread: FakeChannel | int, *, locked: bool = True) -> None:
        """A moderator locks the thread (see `World.lock_thread`)."""
        self.world.lock_thread(thread, locked=locked)
        await self.flush()

    async def delete_thread(self, thread: FakeChannel | int) -> None:
        """The thread is deleted (see `World.delete_thread`)."""
        self.world.delete_thread(thread)
        await self.flush()

    def expire_attachment_urls(self) -> None:
        """A day passes for the CDN: every attachment URL handed out so far is past its
        `ex` and answers 404 (see cdn.py); files added from now on get fresh URLs."""
        self.cdn.expire_issued()

    async def invoke_slash(
        self,
        guild: FakeGuild | int,
        member: FakeMember | FakeUser,
        channel: FakeChannel | int,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        locale: str = "fr",
    ) -> InteractionHandle:
        """A member runs /name in channel: INTERACTION_CREATE for the registered command.

        Options are typed from the command's registration (an attachment option takes a
        StoredAttachment; user/role/channel options take the fake objects). Raises
        LookupError if the bot never registered the command.
        """
        g = self.world.guild(guild)
        command = self._find_command(g.id, name)
        handle = build_interaction(
            self,
            g,
            self.world.member(g, member),
            self.channels[ref_id(channel)],
            command,
            options or {},
            locale,
        )
        self._interactions_by_id[handle.id] = handle
        self._interactions_by_token[handle.token] = handle
        self.gateway.dispatch("INTERACTION_CREATE", handle.payload, None)
        await self.flush()
        return handle

    async def click(
        self,
        member: FakeMember | FakeUser,
        message: StoredMessage | int,
        custom_id: str,
        *,
        locale: str = "fr",
    ) -> InteractionHandle:
        """A member clicks the button `custom_id` on `message`: INTERACTION_CREATE of
        type 3 (MESSAGE_COMPONENT) with `data: {custom_id, component_type: 2}` and the
        message as it is now. The handle records the bot's answer: a new message (type
        4, `wait_answer`), or an update of the button's message (type 7, or type 6 then
        a PATCH of @original: `wait_update`). LookupError if the message has no such
        button; ValueError for a disabled, link or premium one, or an ephemeral message
        someone else was sent (only its recipient sees it).
        """
        stored = self.message_store.get(message)
        if stored.deleted:
            raise LookupError(f"message {stored.id} was deleted")
        channel = self.channels[stored.channel_id]
        g = self.guilds[channel.guild_id]
        clicker = self.world.member(g, member)
        if stored.ephemeral and stored.interaction_id is not None:
            recipient = self._interactions_by_id[stored.interaction_id].payload["member"]
            if int(recipient["user"]["id"]) != clicker.user.id:
                raise ValueError(f"message {stored.id} is ephemeral: only its recipient sees it")
        handle = build_component_interaction(self, g, clicker, stored, custom_id, locale)
        self._interactions_by_id[handle.id] = handle
        self._interactions_by_token[handle.token] = handle
        self.gateway.dispatch("INTERACTION_CREATE", handle.payload, None)
        await self.flush()
        return handle

    async def dispatch(self, event: str, data: Json) -> None:
        """Send any gateway event (intents permitting) to connected clients."""
        self.gateway.dispatch(event, data, None)
        await self.flush()

    async def drop_gateway(self, *, replay_last: int = 0, code: int | None = 4000) -> int:
        """Close the live websocket(s) abnormally (`code=None` aborts the TCP connection:
        the client sees 1006). The client reconnects and RESUMEs; the fake then re-sends
        the last `replay_last` dispatches it had already received (same sequence
        numbers), then anything missed, then RESUMED. Returns connections dropped.
        """
        return await self.gateway.drop(replay_last, code)

    def expire_sessions(self) -> int:
        """Expire the gateway sessions that have no live connection, as Discord does a
        few minutes after a connection is lost: the client's RESUME is answered op 9
        INVALID_SESSION `d: false`, it must IDENTIFY again, and the dispatches it had not
        received (and any sent before it identifies) are lost. Returns how many expired.
        """
        return self.gateway.expire_sessions()

    def hold_resumes(self) -> None:
        """From now on a RESUME waits unanswered (the client stays away) until
        `release_resumes()`: what a test does meanwhile happens during the gap."""
        self.gateway.set_hold_resumes(True)

    def release_resumes(self) -> None:
        """Answer the held RESUMEs (RESUMED and the replay, or op 9 if expired)."""
        self.gateway.set_hold_resumes(False)

    async def guild_outage(self, guild: FakeGuild | int) -> None:
        """An outage: GUILD_DELETE `{id, unavailable: true}` to every session, and the
        guild's events are lost until `guild_back`; a session that identifies meanwhile
        sees it `unavailable: true` in READY, then gets GUILD_DELETE for it."""
        self.gateway.make_unavailable(ref_id(guild), outage=True)
        await self.flush()

    async def delay_guild_create(self, guild: FakeGuild | int) -> None:
        """The guild loads late: a session that identifies from now on sees it
        `unavailable: true` in READY and gets its GUILD_CREATE only at `guild_back`;
        meanwhile its events are lost (a session already connected gets GUILD_DELETE
        `{id, unavailable: true}`, as for an outage)."""
        self.gateway.make_unavailable(ref_id(guild), outage=False)
        await self.flush()

    async def guild_back(self, guild: FakeGuild | int) -> None:
        """The guild is available (again): GUILD_CREATE, `unavailable: false`, with its
        channels and active threads as they are now."""
        self.gateway.make_available(ref_id(guild))
        await self.flush()

    # -- inspecting what the bot did ---------------------------------------------

    @property
    def interactions(self) -> list[InteractionHandle]:
        return list(self._interactions_by_id.values())

    @property
    def identify_payloads(self) -> list[Json]:
        """The `d` of every IDENTIFY (token, intents, properties…)."""
        return self.gateway.identify_payloads

    @property
    def resume_payloads(self) -> list[Json]:
        return self.gateway.resume_payloads

    @property
    def resume_replies(self) -> list[Json]:
        """The fake's answer to each RESUME, as sent: `{"op": 9, "d": false, …}` when the
        session had expired, else the RESUMED dispatch."""
        return self.gateway.resume_replies

    def history(self, channel: FakeChannel | int) -> list[StoredMessage]:
        """Everything visible in the channel, oldest first (no ephemeral, no deleted)."""
        return self.message_store.history(channel)

    def messages_in(self, channel: FakeChannel | int) -> list[StoredMessage]:
        """What the bot posted in the channel and is still visible there, oldest first."""
        return self.message_store.messages_in(channel)

    def sent_by_bot(self) -> list[StoredMessage]:
        """Every message the bot created anywhere, ephemeral and deleted ones included."""
        return self.message_store.sent_by_bot()

    def message(self, message_id: int | StoredMessage) -> StoredMessage:
        return self.message_store.get(message_id)

    def registered_commands(self, guild: FakeGuild | int | None = None) -> list[Json]:
        """Commands as stored (global ones when guild is None)."""
        key = ref_id(guild) if guild is not None else None
        return [dict(c) for c in self._commands.get(key, [])]

    def requests_to(self, method: str, path_contains: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and path_contains in r.path]

    async def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> T:
        """Wait until `predicate()` is truthy and return its value; re-checked on every
        request, gateway frame and state change. TimeoutError names the last requests.
        """
        try:
            return await self._signal.wait_until(predicate, timeout)
        except TimeoutError:
            recent = ", ".join(repr(r) for r in self.requests[-8:])
            message = f"FakeDiscord.wait_for: not true after {timeout}s; last requests: {recent}"
            raise TimeoutError(message) from None

    async def flush(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Return once every connected client was sent every pending dispatch."""
        await self._signal.wait_until(self.gateway.delivered, timeout)

    # -- internals shared with the REST routes, gateway.py and interactions.py ----

    def _token_ok(self, token: str | None) -> bool:
        return bool(token) and (self.token is None or token == self.token)

    def _application_flags(self) -> int:
        """The application's flags: which privileged intents the portal enables."""
        flags = 0
        if self.privileged_intents & Intent.GUILD_PRESENCES:
            flags |= APP_FLAG_GATEWAY_PRESENCE_LIMITED
        if self.privileged_intents & Intent.GUILD_MEMBERS:
            flags |= APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED
        if self.privileged_intents & Intent.MESSAGE_CONTENT:
            flags |= APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED
        return flags

    def _find_command(self, guild_id: int, name: str) -> Json:
        for key in (guild_id, None):
            for command in self._commands.get(key, []):
                if command["name"] == name and command.get("type", 1) == 1:
                    return command
        known = [c["name"] for cmds in self._commands.values() for c in cmds]
        raise LookupError(f"/{name} is not registered (registered: {known})")

    def _member(self, guild: FakeGuild, who: FakeMember | FakeUser) -> FakeMember:
        return self.world.member(guild, who)

    async def _serve_attachment(self, request: web.Request) -> web.Response:
        """The CDN: armed faults first, then the URL's signature and expiry (cdn.py)."""
        call = RecordedRequest(request.method, request.path, dict(request.query), None, [])
        self.downloads.append(call)
        response = self._download(request, call)
        call.status = response.status
        self._signal.notify()
        return response

    def _download(self, request: web.Request, call: RecordedRequest) -> web.Response:
        faulted = self.faults.take(request.method, request.path, cdn=True)
        if faulted is not None:
            call.fault = faulted[0].kind
            return faulted[1]
        aid, filename = int(request.match_info["aid"]), request.match_info["filename"]
        stored = self.attachments.get(aid)
        if stored is None or stored.filename != filename:
            return web.Response(status=404, text="Not Found")
        refusal = self.cdn.refusal(aid, filename, request.query)
        if refusal is not None:
            call.fault = refusal
            return web.Response(status=404, text=EXPIRED_TEXT)
        return web.Response(body=stored.data, content_type=stored.content_type)
