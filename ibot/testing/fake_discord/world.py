"""The world builder: users, guilds, roles, members, channels, forums, threads, files.

This is what a test sets up around the bot, kept apart from the message store
(messages.py) and the server wiring (server.py) so that one object owns "who and what
exists where": the REST routes, the gateway and the message store look things up here,
and new users, guilds, roles, members, channels and attachments are added only here.
Each addition is announced on the gateway as Discord announces it (GUILD_CREATE,
GUILD_ROLE_CREATE, GUILD_MEMBER_ADD, CHANNEL_CREATE), so a bot that is already
connected sees the world grow. The methods are synchronous; FakeDiscord's async user
actions call them and then wait until the events have been sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ibot.testing.fake_discord.constants import (
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    ChannelType,
    Intent,
)
from ibot.testing.fake_discord.model import (
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    Json,
    StoredAttachment,
    guess_content_type,
    image_size,
    iso_now,
    ref_id,
)

if TYPE_CHECKING:
    from ibot.testing.fake_discord.gateway import GatewaySession
    from ibot.testing.fake_discord.server import FakeDiscord


class World:
    """Every user, guild (with its roles, members and channels) and attachment.

    `channels` holds every channel of every guild, threads included, by id.
    """

    def __init__(self, fake: FakeDiscord, bot_name: str) -> None:
        self._fake = fake
        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}  # threads included
        self.attachments: dict[int, StoredAttachment] = {}
        self.bot_user = self.create_user(bot_name, bot=True)
        self.owner_user = self.create_user("ibot-dev")  # the application's owner

    # -- building ------------------------------------------------------------------

    def create_user(self, name: str, *, bot: bool = False) -> FakeUser:
        user = FakeUser(id=self._fake._snowflakes.next(), username=name, bot=bot)
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
        snowflakes = self._fake._snowflakes
        owner_user = self.user(owner if owner is not None else "owner")
        gid = snowflakes.next()
        guild = FakeGuild(id=gid, name=name, owner_id=owner_user.id)
        guild.roles[gid] = FakeRole(gid, gid, "@everyone", everyone_permissions, 0)
        self.guilds[gid] = guild
        guild.members[owner_user.id] = FakeMember(owner_user, gid, [])
        bot = self.bot_user
        bot_role = FakeRole(snowflakes.next(), gid, bot.username, bot_permissions, 1, bot.id)
        guild.roles[bot_role.id] = bot_role
        guild.members[bot.id] = FakeMember(bot, gid, [bot_role.id])
        self._fake.gateway.dispatch(
            "GUILD_CREATE", {}, lambda s: guild.create_payload(self.visible_members(guild, s))
        )
        return guild

    def create_role(self, guild: FakeGuild | int, name: str, *, permissions: int = 0) -> FakeRole:
        g = self.guild(guild)
        role = FakeRole(self._fake._snowflakes.next(), g.id, name, permissions, len(g.roles))
        g.roles[role.id] = role
        self._fake.gateway.dispatch(
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
        g = self.guild(guild)
        fake_user = user if isinstance(user, FakeUser) else self.create_user(user, bot=bot)
        member = FakeMember(fake_user, g.id, [ref_id(r) for r in roles], nick=nick)
        g.members[member.id] = member
        self._fake.gateway.dispatch(
            "GUILD_MEMBER_ADD", {**member.payload(), "guild_id": str(g.id)}, None
        )
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
                    "id": str(self._fake._snowflakes.next()),
                    "name": spec["name"],
                    "moderated": bool(spec.get("moderated", False)),
                    "emoji_id": spec.get("emoji_id"),
                    "emoji_name": spec.get("emoji_name"),
                }
            )
        return self._add_channel(
            guild, ChannelType.GUILD_FORUM, name, topic=topic, available_tags=available
        )

    def open_thread(
        self,
        forum: FakeChannel | int,
        author: FakeMember | FakeUser,
        title: str,
        tags: Iterable[str],
    ) -> FakeChannel:
        """A forum post's thread (type 11), registered but not announced yet: Discord's
        THREAD_CREATE already counts the starter message, so the caller sends it once
        that message exists.
        """
        parent = self.channels[ref_id(forum)]
        if parent.type != ChannelType.GUILD_FORUM:
            raise ValueError(f"#{parent.name} is not a forum")
        guild = self.guilds[parent.guild_id]
        owner = self.member(guild, author).user
        thread = FakeChannel(
            id=self._fake._snowflakes.next(),
            guild_id=guild.id,
            type=ChannelType.PUBLIC_THREAD,
            name=title,
            parent_id=parent.id,
            owner_id=owner.id,
            applied_tags=[parent.tag_id(t) for t in tags],
        )
        guild.channels[thread.id] = thread
        self.channels[thread.id] = thread
        parent.last_message_id = thread.id
        return thread

    def archive_thread(self, thread: FakeChannel | int, *, archived: bool = True) -> None:
        target = self.channels[ref_id(thread)]
        target.archived = archived
        target.archive_timestamp = iso_now()
        self._fake.gateway.dispatch("THREAD_UPDATE", target.payload(), None)

    def tag_thread(self, thread: FakeChannel | int, tags: Iterable[str]) -> None:
        """A moderator sets the thread's applied tags (by name, from its forum's
        available tags): THREAD_UPDATE with the thread channel object, as Modify Channel
        fires it."""
        target = self.channels[ref_id(thread)]
        parent = self.channels[target.parent_id] if target.parent_id else None
        if parent is None:
            raise ValueError(f"thread {target.id} has no forum")
        target.applied_tags = [parent.tag_id(name) for name in tags]
        self._fake.gateway.dispatch("THREAD_UPDATE", target.payload(), None)

    def lock_thread(self, thread: FakeChannel | int, *, locked: bool = True) -> None:
        """A moderator (un)locks the thread: THREAD_UPDATE. Without MANAGE_THREADS the
        bot can then neither post in it nor unarchive it (rest.py)."""
        target = self.channels[ref_id(thread)]
        target.locked = locked
        self._fake.gateway.dispatch("THREAD_UPDATE", target.payload(), None)

    def delete_thread(self, thread: FakeChannel | int) -> None:
        """The thread is deleted: gone from its guild (REST answers 404 10003 Unknown
        Channel), THREAD_DELETE with the subset gateway-events.mdx lists."""
        target = self.channels.pop(ref_id(thread))
        self.guilds[target.guild_id].channels.pop(target.id, None)
        payload = {
            "id": str(target.id),
            "guild_id": str(target.guild_id),
            "parent_id": str(target.parent_id) if target.parent_id else None,
            "type": target.type,
        }
        self._fake.gateway.dispatch("THREAD_DELETE", payload, None)

    def add_attachment(
        self, filename: str, data: bytes, content_type: str | None = None
    ) -> StoredAttachment:
        """A file served at /attachments/{id}/{filename}, to attach to posts or options,
        at a signed URL (`?ex=…&is=…&hm=…&`, see cdn.py)."""
        aid = self._fake._snowflakes.next()
        kind = content_type or guess_content_type(filename, data)
        width, height = image_size(data, kind)
        signed = self._fake.cdn.signed_query(aid, filename)
        url = f"{self._fake.http_url}/attachments/{aid}/{quote(filename)}?{signed}"
        stored = StoredAttachment(aid, filename, data, kind, url, width, height)
        self.attachments[aid] = stored
        return stored

    def _add_channel(
        self, guild: FakeGuild | int, kind: int, name: str, **fields: Any
    ) -> FakeChannel:
        g = self.guild(guild)
        position = sum(1 for c in g.channels.values() if not c.is_thread)
        channel = FakeChannel(self._fake._snowflakes.next(), g.id, kind, name, position, **fields)
        g.channels[channel.id] = channel
        self.channels[channel.id] = channel
        self._fake.gateway.dispatch("CHANNEL_CREATE", channel.payload(), None)
        return channel

    def set_permission_overwrite(
        self,
        channel: FakeChannel | int,
        target: FakeRole | FakeMember | FakeUser | FakeGuild,
        *,
        allow: int = 0,
        deny: int = 0,
    ) -> None:
        """Allow and deny bits for a role, a member, or @everyone (the guild) in this
        channel (its threads take them too), replacing the target's overwrite; both 0
        removes it. CHANNEL_UPDATE, as Discord sends it when overwrites change."""
        target_channel = self.channels[ref_id(channel)]
        if target_channel.is_thread:
            raise ValueError("a thread has no overwrites of its own: set its parent's")
        kind = 1 if isinstance(target, FakeMember | FakeUser) else 0
        overwrites = [
            o for o in target_channel.permission_overwrites if int(o["id"]) != ref_id(target)
        ]
        if allow or deny:
            overwrites.append(
                {"id": str(ref_id(target)), "type": kind, "allow": str(allow), "deny": str(deny)}
            )
        target_channel.permission_overwrites = overwrites
        self._fake.gateway.dispatch("CHANNEL_UPDATE", target_channel.payload(), None)

    # -- looking things up ---------------------------------------------------------

    def user(self, who: FakeUser | FakeMember | str) -> FakeUser:
        """The user behind a member, the user itself, or a new user with that name."""
        if isinstance(who, FakeMember):
            return who.user
        if isinstance(who, FakeUser):
            return who
        return self.create_user(who)

    def guild(self, guild: FakeGuild | int) -> FakeGuild:
        return self.guilds[ref_id(guild)]

    def member(self, guild: FakeGuild, who: FakeMember | FakeUser) -> FakeMember:
        """The guild's member for `who` (ValueError when they are not in the guild)."""
        member = guild.members.get(ref_id(who))
        if member is None:
            raise ValueError(f"{who!r} is not a member of {guild.name!r}")
        return member

    # -- the world as a gateway session sees it --------------------------------------

    def visible_members(self, guild: FakeGuild, session: GatewaySession) -> list[FakeMember]:
        """Without GUILD_MEMBERS, Discord sends only the bot's own member."""
        if session.intents & Intent.GUILD_MEMBERS:
            return list(guild.members.values())
        return [guild.members[self.bot_user.id]]

    def guild_create_payloads(self, session: GatewaySession) -> list[Json]:
        """One GUILD_CREATE body per guild, after READY."""
        return [g.create_payload(self.visible_members(g, session)) for g in self.guilds.values()]

    def members_chunk(self, data: Json) -> Json:
        """The GUILD_MEMBERS_CHUNK answering a REQUEST_GUILD_MEMBERS (op 8)."""
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
