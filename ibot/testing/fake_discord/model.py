"""The fake's world: users, guilds, roles, channels, threads, messages and attachments.

Objects keep integer ids; `payload()` methods render them the way Discord serves them
(snowflakes as strings, every key nextcord reads present).
"""

from __future__ import annotations

import io
import mimetypes
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from ibot.testing.fake_discord.constants import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    DISCORD_EPOCH_MS,
    VIEW_CHANNEL,
    ChannelType,
    MessageFlag,
)

Json = dict[str, Any]


class Snowflakes:
    """Snowflake ids from the current time, strictly increasing.

    Built from the wall clock because nextcord reads times out of ids (an interaction
    whose id looks older than 3 s is treated as expired).
    """

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(self._last + 1, now)
        return self._last


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


def ref_id(obj: Any) -> int:
    """Accept either an object with `.id` or an id (int or str)."""
    return int(getattr(obj, "id", obj))


@dataclass(eq=False)
class FakeUser:
    id: int
    username: str
    bot: bool = False
    global_name: str | None = None

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> Json:
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name or self.username,
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,  # required in the OpenAPI file's UserResponse, as is primary_guild
            "primary_guild": None,
        }


@dataclass(eq=False)
class FakeRole:
    id: int
    guild_id: int
    name: str
    permissions: int
    position: int
    bot_id: int | None = None  # set on the bot's managed role

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"

    def payload(self) -> Json:
        data: Json = {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": self.bot_id is not None,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass(eq=False)
class FakeMember:
    user: FakeUser
    guild_id: int
    role_ids: list[int]
    joined_at: str = field(default_factory=iso_now)
    nick: str | None = None

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def name(self) -> str:
        return self.user.username

    @property
    def mention(self) -> str:
        return self.user.mention

    def payload(self, *, with_user: bool = True) -> Json:
        data: Json = {
            "roles": [str(r) for r in self.role_ids],
            "joined_at": self.joined_at,
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.payload()
        return data


@dataclass(eq=False)
class FakeChannel:
    """A guild channel: text (0), forum (15) or public thread (11)."""

    id: int
    guild_id: int
    type: int
    name: str
    position: int = 0
    topic: str | None = None
    parent_id: int | None = None
    available_tags: list[Json] = field(default_factory=list)  # forums
    owner_id: int | None = None  # threads
    applied_tags: list[int] = field(default_factory=list)  # threads
    archived: bool = False
    locked: bool = False
    message_count: int = 0
    last_message_id: int | None = None
    created_at: str = field(default_factory=iso_now)
    archive_timestamp: str = field(default_factory=iso_now)
    #: Overwrite objects (channel.mdx): {id, type 0 role / 1 member, allow, deny}; a
    #: thread has none of its own and takes its parent's (threads.mdx, Permissions).
    permission_overwrites: list[Json] = field(default_factory=list)

    @property
    def is_thread(self) -> bool:
        return self.type == ChannelType.PUBLIC_THREAD

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    def tag_id(self, name: str) -> int:
        """The id of the forum tag called `name` (ValueError when the forum lacks it)."""
        for tag in self.available_tags:
            if tag["name"] == name:
                return int(tag["id"])
        raise ValueError(f"forum {self.name!r} has no tag {name!r}")

    def payload(self) -> Json:
        data: Json = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "flags": 0,
            "rate_limit_per_user": 0,
            "last_message_id": str(self.last_message_id) if self.last_message_id else None,
        }
        if self.is_thread:
            data.update(
                parent_id=str(self.parent_id),
                owner_id=str(self.owner_id),
                message_count=self.message_count,
                total_message_sent=self.message_count,
                member_count=1,
                applied_tags=[str(t) for t in self.applied_tags],
                thread_metadata={
                    "archived": self.archived,
                    "locked": self.locked,
                    "auto_archive_duration": 4320,
                    "archive_timestamp": self.archive_timestamp,
                    "create_timestamp": self.created_at,
                    "invitable": True,
                },
            )
            return data
        data.update(
            position=self.position,
            parent_id=None,
            topic=self.topic,
            nsfw=False,
            permission_overwrites=[dict(o) for o in self.permission_overwrites],
            default_auto_archive_duration=4320,
        )
        if self.type == ChannelType.GUILD_FORUM:
            data.update(
                available_tags=[dict(t) for t in self.available_tags],
                default_reaction_emoji=None,
                default_sort_order=None,
                default_forum_layout=0,
                default_thread_rate_limit_per_user=0,
            )
        return data


@dataclass(eq=False)
class FakeGuild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, FakeRole] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    channels: dict[int, FakeChannel] = field(default_factory=dict)  # threads included
    joined_at: str = field(default_factory=iso_now)

    def permissions_of(self, member: FakeMember) -> int:
        """Guild-level permission bits, as Discord computes them (no channel overwrites)."""
        if member.id == self.owner_id:
            return ALL_PERMISSIONS
        bits = self.roles[self.id].permissions  # @everyone has the guild's id
        for role_id in member.role_ids:
            role = self.roles.get(role_id)
            if role is not None:
                bits |= role.permissions
        return ALL_PERMISSIONS if bits & ADMINISTRATOR else bits

    def permissions_in(self, member: FakeMember, channel: FakeChannel) -> int:
        """The member's permission bits in the channel, overwrites included, as the
        docs' permissions topic computes them: the guild-level bits (ADMINISTRATOR and
        the owner have every bit, whatever the overwrites), then the @everyone
        overwrite, then the member's role overwrites together, then the member's own;
        a thread uses its parent's overwrites. ADMINISTRATOR is a guild permission: an
        overwrite cannot grant it. What interactions carry as `member.permissions` and
        `app_permissions`: implicit permissions not applied (`allows` applies them)."""
        bits = self.permissions_of(member)
        if bits & ADMINISTRATOR:
            return ALL_PERMISSIONS
        source = self.channels.get(channel.parent_id or 0) if channel.is_thread else channel
        overwrites = {int(o["id"]): o for o in (source.permission_overwrites if source else [])}

        def apply(overwrite: Json | None, bits: int) -> int:
            if overwrite is None:
                return bits
            allow = int(overwrite.get("allow") or 0) & ~ADMINISTRATOR
            return (bits & ~int(overwrite.get("deny") or 0)) | allow

        bits = apply(overwrites.get(self.id), bits)  # @everyone has the guild's id
        allow = deny = 0
        for role_id in member.role_ids:
            role_overwrite = overwrites.get(role_id)
            if role_overwrite is not None and int(role_overwrite.get("type", 0)) == 0:
                allow |= int(role_overwrite.get("allow") or 0)
                deny |= int(role_overwrite.get("deny") or 0)
        bits = (bits & ~deny) | (allow & ~ADMINISTRATOR)
        own = overwrites.get(member.id)
        return apply(own if own is not None and int(own.get("type", 1)) == 1 else None, bits)

    def allows(self, member: FakeMember, channel: FakeChannel, permission: int) -> bool:
        """Whether the member has `permission` in the channel, implicit permissions
        included: nothing at all without VIEW_CHANNEL."""
        bits = self.permissions_in(member, channel)
        return bool(bits & VIEW_CHANNEL) and bits & permission == permission

    def create_payload(self, members: list[FakeMember]) -> Json:
        """The GUILD_CREATE body, with the members this session may see."""
        channels = [c for c in self.channels.values() if not c.is_thread]
        threads = [c for c in self.channels.values() if c.is_thread and not c.archived]
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": "fr",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "application_id": None,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "premium_progress_bar_enabled": False,
            "incidents_data": None,
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": [r.payload() for r in self.roles.values()],
            "joined_at": self.joined_at,
            "large": False,
            "unavailable": False,
            "member_count": len(self.members),
            "members": [m.payload() for m in members],
            "channels": [c.payload() for c in channels],
            "threads": [t.payload() for t in threads],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }


@dataclass(eq=False)
class StoredAttachment:
    """A file the fake serves at `url` (uploaded by the bot or added by a test)."""

    id: int
    filename: str
    data: bytes
    content_type: str
    url: str
    width: int | None = None
    height: int | None = None
    description: str | None = None

    def payload(self, *, ephemeral: bool = False) -> Json:
        data: Json = {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:  # a string when present, never null
            data["description"] = self.description
        if self.width is not None:
            data.update(width=self.width, height=self.height)
        if ephemeral:
            data["ephemeral"] = True
        return data


def guess_content_type(filename: str, data: bytes) -> str:
    """Discord sniffs the type itself; nextcord always uploads application/octet-stream."""
    guessed, _ = mimetypes.guess_type(filename)
    if guessed:
        return guessed
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    return "application/octet-stream"


def image_size(data: bytes, content_type: str) -> tuple[int | None, int | None]:
    """Width and height for images (Pillow reads only the header), else (None, None)."""
    if not content_type.startswith("image/"):
        return None, None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return image.width, image.height
    except Exception:  # not an image after all: Discord just omits the size
        return None, None


@dataclass(eq=False)
class StoredMessage:
    """A message as stored by the fake, plus what only the sender's request showed.

    `data` is the message object Discord serves; `files` the bytes uploaded with it;
    `allowed_mentions` and `request` what the client sent; `edits` every later PATCH body;
    `reactors` who put each emoji (by name), in order (`data["reactions"]` has the counts).
    """

    data: Json
    files: list[StoredAttachment] = field(default_factory=list)
    allowed_mentions: Json | None = None
    request: Json | None = None
    ephemeral: bool = False
    interaction_id: int | None = None
    edits: list[Json] = field(default_factory=list)
    deleted: bool = False
    reactors: dict[str, list[int]] = field(default_factory=dict)

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def channel_id(self) -> int:
        return int(self.data["channel_id"])

    @property
    def author_id(self) -> int:
        return int(self.data["author"]["id"])

    @property
    def content(self) -> str:
        return cast(str, self.data["content"])

    @property
    def embeds(self) -> list[Json]:
        return cast(list[Json], self.data["embeds"])

    @property
    def attachments(self) -> list[Json]:
        return cast(list[Json], self.data["attachments"])

    @property
    def flags(self) -> int:
        return cast(int, self.data.get("flags", 0))

    @property
    def loading(self) -> bool:
        """True while this is an unanswered deferral ("Bot is thinking…")."""
        return bool(self.flags & MessageFlag.LOADING)

    def file_bytes(self, filename: str) -> bytes:
        for stored in self.files:
            if stored.filename == filename:
                return stored.data
        raise KeyError(f"message {self.id} has no file {filename!r}")


_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


def resolve_mentions(
    content: str, allowed: Json | None, guild: FakeGuild | None, users: dict[int, FakeUser]
) -> tuple[list[FakeUser], list[int], bool]:
    """Who a message pings: (users, role ids, @everyone), after `allowed_mentions`.

    Like Discord, a mention that allowed_mentions forbids stays in the text but pings
    nobody, so it is left out of `mentions` / `mention_roles`.
    """
    parse = ["users", "roles", "everyone"] if allowed is None else allowed.get("parse", [])
    allowed_users = {int(u) for u in (allowed or {}).get("users", [])}
    allowed_roles = {int(r) for r in (allowed or {}).get("roles", [])}
    pinged: list[FakeUser] = []
    for raw in dict.fromkeys(_USER_MENTION.findall(content)):
        uid = int(raw)
        if uid in users and ("users" in parse or uid in allowed_users):
            pinged.append(users[uid])
    roles = [
        int(raw)
        for raw in dict.fromkeys(_ROLE_MENTION.findall(content))
        if ("roles" in parse or int(raw) in allowed_roles)
        and (guild is None or int(raw) in guild.roles)
    ]
    everyone = "everyone" in parse and ("@everyone" in content or "@here" in content)
    return pinged, roles, everyone
