"""FakeDiscord: the aiohttp app, the world-building API and what tests inspect."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web

from ibot.testing.fake_discord.constants import (
    APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED,
    APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED,
    APP_FLAG_GATEWAY_PRESENCE_LIMITED,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    INVALID_FORM_BODY,
    PRIVILEGED_INTENTS,
    ChannelType,
    Intent,
    MessageFlag,
)
from ibot.testing.fake_discord.faults import Faults
from ibot.testing.fake_discord.gateway import Gateway, GatewaySession
from ibot.testing.fake_discord.interactions import (
    InteractionHandle,
    build_interaction,
    is_ephemeral,
)
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
    guess_content_type,
    image_size,
    iso_now,
    ref_id,
    resolve_mentions,
)
from ibot.testing.fake_discord.rest import ApiError, RecordedRequest, RestApi

T = TypeVar("T")


class Signal:
    """Wakes every waiter whenever the fake's state changes (no polling, no sleeps)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], T], timeout: float | None) -> T:  # noqa: ASYNC109
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
        enabled in the developer portal (asking for others closes the gateway with 4014).
        `ack_window_s`: how long the bot has to acknowledge an interaction.
        """
        self.token = token
        self.privileged_intents = privileged_intents
        self.ack_window_s = ack_window_s
        self._snowflakes = Snowflakes()
        self._signal = Signal()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))  # bound now so URLs exist before start()
        self._runner: web.AppRunner | None = None
        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}  # threads included
        self.attachments: dict[int, StoredAttachment] = {}
        self._messages: dict[int, StoredMessage] = {}  # every message, by id, in order
        self._commands: dict[int | None, list[Json]] = {}
        self._interactions_by_id: dict[int, InteractionHandle] = {}
        self._interactions_by_token: dict[str, InteractionHandle] = {}
        self.requests: list[RecordedRequest] = []
        self.unknown_routes: list[RecordedRequest] = []
        self.faults = Faults()
        self.gateway = Gateway(self, heartbeat_interval_ms)
        self.bot_user = self.create_user(bot_name, bot=True)
        self.owner_user = self.create_user("ibot-dev")  # the application's owner
        self._rest = RestApi(self)

    # -- lifecycle -------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

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

    # -- building the world ----------------------------------------------------

    def create_user(self, name: str, *, bot: bool = False) -> FakeUser:
        user = FakeUser(id=self._snowflakes.next(), username=name, bot=bot)
        self.users[user.id] = user
        return user

    def create_guild(
        self,
        name: str,
        *,
        owner: FakeUser | FakeMember | str | None = None,
        everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
    ) -> FakeGuild:
        """A guild with @everyone, its owner, and the bot (with its managed role)."""
        owner_user = self._user(owner if owner is not None else "owner")
        gid = self._snowflakes.next()
        guild = FakeGuild(id=gid, name=name, owner_id=owner_user.id)
        guild.roles[gid] = FakeRole(gid, gid, "@everyone", everyone_permissions, 0)
        self.guilds[gid] = guild
        guild.members[owner_user.id] = FakeMember(owner_user, gid, [])
        bot_role = FakeRole(
            self._snowflakes.next(),
            gid,
            self.bot_user.username,
            bot_permissions,
            1,
            self.bot_user.id,
        )
        guild.roles[bot_role.id] = bot_role
        guild.members[self.bot_user.id] = FakeMember(self.bot_user, gid, [bot_role.id])
        self.gateway.dispatch(
            "GUILD_CREATE", {}, lambda s: guild.create_payload(self._visible_members(guild, s))
        )
        return guild

    def create_role(self, guild: FakeGuild | int, name: str, *, permissions: int = 0) -> FakeRole:
        g = self._guild(guild)
        role = FakeRole(self._snowflakes.next(), g.id, name, permissions, len(g.roles))
        g.roles[role.id] = role
        self.gateway.dispatch(
            "GUILD_ROLE_CREATE", {"guild_id": str(g.id), "role": role.payload()}, None
        )
        return role

    def create_member(
        self,
        guild: FakeGuild | int,
        user: FakeUser | str,
        *,
        roles: Iterable[FakeRole | int] = (),
        bot: bool = False,
        nick: str | None = None,
    ) -> FakeMember:
        """Add a user (a new one when given a name) to the guild with these roles."""
        g = self._guild(guild)
        fake_user = user if isinstance(user, FakeUser) else self.create_user(user, bot=bot)
        member = FakeMember(fake_user, g.id, [ref_id(r) for r in roles], nick=nick)
        g.members[member.id] = member
        self.gateway.dispatch("GUILD_MEMBER_ADD", {**member.payload(), "guild_id": str(g.id)}, None)
        return member

    def create_text_channel(
        self, guild: FakeGuild | int, name: str, *, topic: str | None = None
    ) -> FakeChannel:
        return self._add_channel(guild, ChannelType.GUILD_TEXT, name, topic=topic)

    def create_forum(
        self,
        guild: FakeGuild | int,
        name: str,
        *,
        tags: Iterable[str | Mapping[str, Any]] = (),
        topic: str | None = None,
    ) -> FakeChannel:
        """A forum (type 15); each tag is a name or {name, moderated, emoji_name}."""
        available = []
        for tag in tags:
            spec = {"name": tag} if isinstance(tag, str) else dict(tag)
            available.append(
                {
                    "id": str(self._snowflakes.next()),
                    "name": spec["name"],
                    "moderated": bool(spec.get("moderated", False)),
                    "emoji_id": spec.get("emoji_id"),
                    "emoji_name": spec.get("emoji_name"),
                }
            )
        return self._add_channel(
            guild, ChannelType.GUILD_FORUM, name, topic=topic, available_tags=available
        )

    def add_attachment(
        self, filename: str, data: bytes, content_type: str | None = None
    ) -> StoredAttachment:
        """A file served at /attachments/{id}/{filename}, to attach to posts or options."""
        aid = self._snowflakes.next()
        kind = content_type or guess_content_type(filename, data)
        width, height = image_size(data, kind)
        url = f"{self.http_url}/attachments/{aid}/{quote(filename)}"
        stored = StoredAttachment(aid, filename, data, kind, url, width, height)
        self.attachments[aid] = stored
        return stored

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
    ) -> FakeChannel:
        """A forum post: thread (type 11) + starter message with the thread's id.

        Dispatches THREAD_CREATE (newly_created) then MESSAGE_CREATE, and returns once
        every connected client was sent both.
        """
        parent = self.channels[ref_id(forum)]
        if parent.type != ChannelType.GUILD_FORUM:
            raise ValueError(f"#{parent.name} is not a forum")
        guild = self.guilds[parent.guild_id]
        user = self._member(guild, author).user
        thread = FakeChannel(
            id=self._snowflakes.next(),
            guild_id=guild.id,
            type=ChannelType.PUBLIC_THREAD,
            name=title,
            parent_id=parent.id,
            owner_id=user.id,
            applied_tags=[parent.tag_id(t) for t in tags],
        )
        guild.channels[thread.id] = thread
        self.channels[thread.id] = thread
        parent.last_message_id = thread.id
        starter = self._new_message(
            thread, user, content=content, files=list(attachments), message_id=thread.id
        )
        self.gateway.dispatch("THREAD_CREATE", {**thread.payload(), "newly_created": True}, None)
        self._dispatch_message("MESSAGE_CREATE", starter)
        await self.flush()
        return thread

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
        user = self._member(self.guilds[target.guild_id], author).user
        tags = [f"<@{ref_id(m)}>" for m in mentions if f"<@{ref_id(m)}>" not in content]
        text = " ".join([*tags, content]) if tags else content
        stored = self._new_message(
            target,
            user,
            content=text,
            files=list(attachments),
            reply_to=ref_id(reply_to) if reply_to is not None else None,
        )
        self._dispatch_message("MESSAGE_CREATE", stored)
        await self.flush()
        return stored

    async def archive_thread(self, thread: FakeChannel | int, *, archived: bool = True) -> None:
        target = self.channels[ref_id(thread)]
        target.archived = archived
        target.archive_timestamp = iso_now()
        self.gateway.dispatch("THREAD_UPDATE", target.payload(), None)
        await self.flush()

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
        g = self._guild(guild)
        command = self._find_command(g.id, name)
        handle = build_interaction(
            self,
            g,
            self._member(g, member),
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

    def history(self, channel: FakeChannel | int) -> list[StoredMessage]:
        """Everything visible in the channel, oldest first (no ephemeral, no deleted)."""
        cid = ref_id(channel)
        return [
            m
            for m in self._messages.values()
            if m.channel_id == cid and not m.ephemeral and not m.deleted
        ]

    def messages_in(self, channel: FakeChannel | int) -> list[StoredMessage]:
        """What the bot posted in the channel and is still visible there, oldest first."""
        return [m for m in self.history(channel) if m.author_id == self.bot_user.id]

    def sent_by_bot(self) -> list[StoredMessage]:
        """Every message the bot created anywhere, ephemeral and deleted ones included."""
        return [m for m in self._messages.values() if m.author_id == self.bot_user.id]

    def message(self, message_id: int | StoredMessage) -> StoredMessage:
        return self._messages[ref_id(message_id)]

    def registered_commands(self, guild: FakeGuild | int | None = None) -> list[Json]:
        """Commands as stored (global ones when guild is None)."""
        key = ref_id(guild) if guild is not None else None
        return [dict(c) for c in self._commands.get(key, [])]

    def requests_to(self, method: str, path_contains: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and path_contains in r.path]

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:  # noqa: ASYNC109
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

    # -- internals shared with rest.py, gateway.py and interactions.py ------------

    def _token_ok(self, token: str | None) -> bool:
        return bool(token) and (self.token is None or token == self.token)

    def _application_flags(self) -> int:
        flags = 0
        if self.privileged_intents & Intent.GUILD_PRESENCES:
            flags |= APP_FLAG_GATEWAY_PRESENCE_LIMITED
        if self.privileged_intents & Intent.GUILD_MEMBERS:
            flags |= APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED
        if self.privileged_intents & Intent.MESSAGE_CONTENT:
            flags |= APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED
        return flags

    def _ready_payload(self, session: GatewaySession) -> Json:
        user = self.bot_user.payload()
        user.update(verified=True, mfa_enabled=False, flags=0)
        return {
            "v": 10,
            "user": user,
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": self._application_flags()},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "_trace": ["fake-discord"],
        }

    def _visible_members(self, guild: FakeGuild, session: GatewaySession) -> list[FakeMember]:
        """Without GUILD_MEMBERS, Discord sends only the bot's own member."""
        if session.intents & Intent.GUILD_MEMBERS:
            return list(guild.members.values())
        return [guild.members[self.bot_user.id]]

    def _guild_create_payloads(self, session: GatewaySession) -> list[Json]:
        return [g.create_payload(self._visible_members(g, session)) for g in self.guilds.values()]

    def _members_chunk(self, data: Json) -> Json:
        guild = self.guilds.get(int(data.get("guild_id", 0)))
        members = list(guild.members.values()) if guild else []
        if data.get("user_ids"):
            wanted = {int(u) for u in data["user_ids"]}
            members = [m for m in members if m.id in wanted]
        elif data.get("query"):
            members = [m for m in members if m.name.lower().startswith(data["query"].lower())]
        if data.get("limit"):
            members = members[: int(data["limit"])]
        chunk: Json = {
            "guild_id": str(data.get("guild_id")),
            "members": [m.payload() for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        return chunk

    def _find_command(self, guild_id: int, name: str) -> Json:
        for key in (guild_id, None):
            for command in self._commands.get(key, []):
                if command["name"] == name and command.get("type", 1) == 1:
                    return command
        known = [c["name"] for cmds in self._commands.values() for c in cmds]
        raise LookupError(f"/{name} is not registered (registered: {known})")

    def _new_message(
        self,
        channel: FakeChannel,
        author: FakeUser,
        *,
        content: str = "",
        embeds: list[Json] | None = None,
        files: list[StoredAttachment] | None = None,
        allowed_mentions: Json | None = None,
        flags: int = 0,
        request: Json | None = None,
        reply_to: int | str | None = None,
        nonce: Any = None,
        message_id: int | None = None,
        ephemeral: bool = False,
        message_type: int = 0,
        extra: Json | None = None,
        interaction_id: int | None = None,
    ) -> StoredMessage:
        guild = self.guilds[channel.guild_id]
        mid = message_id or self._snowflakes.next()
        files = files or []
        data: Json = {
            "id": str(mid),
            "channel_id": str(channel.id),
            "author": author.payload(),
            "content": content,
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "tts": False,
            "attachments": [f.payload(ephemeral=ephemeral) for f in files],
            "embeds": [_normalize_embed(e) for e in embeds or []],
            "reactions": [],
            "pinned": False,
            "type": message_type,
            "flags": flags,
            "components": [],
        }
        _set_mentions(data, allowed_mentions, guild, self.users)
        if nonce is not None:
            data["nonce"] = nonce
        if reply_to is not None:
            referenced = self._messages.get(int(reply_to))
            if referenced is None or referenced.channel_id != channel.id:
                raise ApiError(
                    400,
                    INVALID_FORM_BODY,
                    "Invalid Form Body",
                    {"message_reference": {"_errors": [{"code": "REPLIES_UNKNOWN_MESSAGE"}]}},
                )
            data["type"] = 19
            data["message_reference"] = {
                "type": 0,
                "message_id": str(referenced.id),
                "channel_id": str(channel.id),
                "guild_id": str(guild.id),
            }
            data["referenced_message"] = referenced.data
        data.update(extra or {})
        stored = StoredMessage(
            data=data,
            files=list(files),
            allowed_mentions=allowed_mentions,
            request=request,
            ephemeral=ephemeral,
            interaction_id=interaction_id,
        )
        self._messages[mid] = stored
        if not ephemeral:
            channel.last_message_id = mid
            if channel.is_thread and mid != channel.id:
                channel.message_count += 1
        self._signal.notify()
        return stored

    def _edit_message(
        self,
        stored: StoredMessage,
        body: Json,
        files: list[StoredAttachment],
        *,
        replace_attachments: bool = False,
    ) -> None:
        """Apply a PATCH (or a follow-up filling a deferral) and dispatch MESSAGE_UPDATE."""
        data = stored.data
        was_loading = stored.loading
        if "content" in body:
            data["content"] = body["content"] or ""
        if "embeds" in body:
            data["embeds"] = [_normalize_embed(e) for e in body["embeds"] or []]
        if "allowed_mentions" in body:
            stored.allowed_mentions = body["allowed_mentions"]
        if "flags" in body and body["flags"] is not None:
            kept = data.get("flags", 0) & MessageFlag.EPHEMERAL
            data["flags"] = kept | (
                int(body["flags"]) & ~(MessageFlag.EPHEMERAL | MessageFlag.LOADING)
            )
        data["flags"] = data.get("flags", 0) & ~MessageFlag.LOADING
        if replace_attachments:
            stored.files = []
        elif body.get("attachments") is not None:
            keep = {str(a.get("id")) for a in body["attachments"] if isinstance(a, dict)}
            stored.files = [f for f in stored.files if str(f.id) in keep]
        stored.files += files
        data["attachments"] = [f.payload(ephemeral=stored.ephemeral) for f in stored.files]
        guild = self.guilds[self.channels[stored.channel_id].guild_id]
        _set_mentions(data, stored.allowed_mentions, guild, self.users)
        data["edited_timestamp"] = None if was_loading else iso_now()
        stored.edits.append(body)
        if not stored.ephemeral:
            self._dispatch_message("MESSAGE_UPDATE", stored)
        self._signal.notify()

    def _delete_message(self, stored: StoredMessage) -> None:
        stored.deleted = True
        if not stored.ephemeral:
            guild_id = self.channels[stored.channel_id].guild_id
            payload = {
                "id": str(stored.id),
                "channel_id": str(stored.channel_id),
                "guild_id": str(guild_id),
            }
            self.gateway.dispatch("MESSAGE_DELETE", payload, None)
        self._signal.notify()

    def _interaction_message(
        self,
        handle: InteractionHandle,
        body: Json,
        files: list[StoredAttachment],
        *,
        original: bool,
    ) -> StoredMessage:
        """A message created through an interaction (response or follow-up)."""
        channel = self.channels[int(handle.payload["channel_id"])]
        user = handle.payload["member"]["user"]
        ephemeral = is_ephemeral(body.get("flags"))
        summary = {"id": str(handle.id), "type": 2, "name": handle.name, "user": user}
        metadata = {
            "id": str(handle.id),
            "type": 2,
            "user": user,
            "name": handle.name,
            "authorizing_integration_owners": handle.payload["authorizing_integration_owners"],
        }
        stored = self._new_message(
            channel,
            self.bot_user,
            content=body.get("content") or "",
            embeds=body.get("embeds") or [],
            files=files,
            allowed_mentions=body.get("allowed_mentions"),
            flags=int(body.get("flags") or 0),
            request=body,
            ephemeral=ephemeral,
            message_type=20 if original else 0,
            interaction_id=handle.id,
            extra={
                "webhook_id": str(self.application_id),
                "application_id": str(self.application_id),
                "interaction": summary,
                "interaction_metadata": metadata,
            },
        )
        if not ephemeral:
            self._dispatch_message("MESSAGE_CREATE", stored)
        return stored

    def _dispatch_message(self, event: str, stored: StoredMessage) -> None:
        """MESSAGE_CREATE/UPDATE as the gateway shapes it: guild_id and the author's
        member added; content, embeds and attachments emptied for a session without the
        MESSAGE_CONTENT intent, unless the bot wrote the message or is mentioned in it.
        """
        guild = self.guilds[self.channels[stored.channel_id].guild_id]
        data = dict(stored.data, guild_id=str(guild.id))
        member = guild.members.get(stored.author_id)
        if member is not None and "webhook_id" not in data:
            data["member"] = member.payload(with_user=False)
        exempt = self._content_exempt(stored)

        def shape(session: GatewaySession) -> Json:
            if exempt or session.intents & Intent.MESSAGE_CONTENT:
                return data
            return _without_content(data)

        self.gateway.dispatch(event, data, shape)

    def _content_exempt(self, stored: StoredMessage) -> bool:
        """Discord shows content to a bot lacking the intent only for its own messages
        and messages that mention it.
        """
        bot_id = str(self.bot_user.id)
        return stored.author_id == self.bot_user.id or any(
            u["id"] == bot_id for u in stored.data["mentions"]
        )

    def _rest_view(self, stored: StoredMessage) -> Json:
        """A message as REST serves it: content withheld unless the developer portal
        enables the MESSAGE_CONTENT intent (`privileged_intents`).
        """
        if self.privileged_intents & Intent.MESSAGE_CONTENT or self._content_exempt(stored):
            return stored.data
        return _without_content(stored.data)

    async def _serve_attachment(self, request: web.Request) -> web.Response:
        stored = self.attachments.get(int(request.match_info["aid"]))
        if stored is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored.data, content_type=stored.content_type)

    def _user(self, who: FakeUser | FakeMember | str) -> FakeUser:
        if isinstance(who, FakeMember):
            return who.user
        if isinstance(who, FakeUser):
            return who
        return self.create_user(who)

    def _guild(self, guild: FakeGuild | int) -> FakeGuild:
        return self.guilds[ref_id(guild)]

    def _member(self, guild: FakeGuild, who: FakeMember | FakeUser) -> FakeMember:
        member = guild.members.get(ref_id(who))
        if member is None:
            raise ValueError(f"{who!r} is not a member of {guild.name!r}")
        return member

    def _add_channel(
        self, guild: FakeGuild | int, kind: int, name: str, **fields: Any
    ) -> FakeChannel:
        g = self._guild(guild)
        position = sum(1 for c in g.channels.values() if not c.is_thread)
        channel = FakeChannel(self._snowflakes.next(), g.id, kind, name, position, **fields)
        g.channels[channel.id] = channel
        self.channels[channel.id] = channel
        self.gateway.dispatch("CHANNEL_CREATE", channel.payload(), None)
        return channel


def _without_content(data: Json) -> Json:
    return dict(data, content="", embeds=[], attachments=[], components=[])


def _normalize_embed(embed: Json) -> Json:
    return {"type": "rich", **embed}


def _set_mentions(
    data: Json, allowed: Json | None, guild: FakeGuild, users: dict[int, FakeUser]
) -> None:
    pinged, roles, everyone = resolve_mentions(data["content"], allowed, guild, users)
    mentions = []
    for user in pinged:
        payload = user.payload()
        member = guild.members.get(user.id)
        if member is not None:
            payload["member"] = member.payload(with_user=False)
        mentions.append(payload)
    data["mentions"] = mentions
    data["mention_roles"] = [str(r) for r in roles]
    data["mention_everyone"] = everyone
