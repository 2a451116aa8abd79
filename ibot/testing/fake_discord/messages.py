"""The message store: every message by id, its edits and deletion, and who may see it.

Messages reach the store three ways: a test's user posts (FakeDiscord.post_message and
create_forum_thread), the bot's REST calls (rest.py), and interaction responses and
follow-ups. All three need the same Discord rules, so they live here once rather than
in each caller:

- creation: message objects shaped as Discord serves them, `mentions` resolved after
  `allowed_mentions`, replies checked against the channel, the channel's
  last_message_id and thread message_count kept up to date;
- edits and deletes, announced as MESSAGE_UPDATE and MESSAGE_DELETE (never for an
  ephemeral message, which only its recipient sees);
- visibility: a gateway session without the MESSAGE_CONTENT intent, and REST reads
  when the developer portal does not enable it, get content, embeds and attachments
  emptied, except in the bot's own messages and those that mention it;
- reading back what the channel shows and what the bot posted, for tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ibot.testing.fake_discord.constants import INVALID_FORM_BODY, Intent, MessageFlag
from ibot.testing.fake_discord.interactions import InteractionHandle, is_ephemeral
from ibot.testing.fake_discord.model import (
    FakeChannel,
    FakeGuild,
    FakeUser,
    Json,
    StoredAttachment,
    StoredMessage,
    iso_now,
    ref_id,
    resolve_mentions,
)
from ibot.testing.fake_discord.wire import ApiError

if TYPE_CHECKING:
    from ibot.testing.fake_discord.gateway import GatewaySession
    from ibot.testing.fake_discord.server import FakeDiscord


class MessageStore:
    """Every message of every channel, by id, in creation order (deleted ones kept)."""

    def __init__(self, fake: FakeDiscord) -> None:
        self._fake = fake
        self._messages: dict[int, StoredMessage] = {}

    # -- reading -------------------------------------------------------------------

    def get(self, message_id: int | StoredMessage) -> StoredMessage:
        """The message with this id, whatever its state (KeyError when there is none)."""
        return self._messages[ref_id(message_id)]

    def find(self, message_id: int) -> StoredMessage | None:
        return self._messages.get(message_id)

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
        bot_id = self._fake.bot_user.id
        return [m for m in self.history(channel) if m.author_id == bot_id]

    def sent_by_bot(self) -> list[StoredMessage]:
        """Every message the bot created anywhere, ephemeral and deleted ones included."""
        bot_id = self._fake.bot_user.id
        return [m for m in self._messages.values() if m.author_id == bot_id]

    # -- writing -------------------------------------------------------------------

    def create(
        self,
        channel: FakeChannel,
        author: FakeUser,
        *,
        content: str = "",
        embeds: list[Json] | None = None,
        components: list[Json] | None = None,
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
        """Store a new message (not dispatched: the caller decides whether it is).

        A reply to a message that is not in the channel is Discord's 400
        REPLIES_UNKNOWN_MESSAGE.
        """
        fake = self._fake
        guild = fake.guilds[channel.guild_id]
        mid = message_id or fake._snowflakes.next()
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
            "components": stored_components(components),
        }
        _set_mentions(data, allowed_mentions, guild, fake.users)
        if nonce is not None:
            data["nonce"] = nonce
        if reply_to is not None:
            referenced = self._messages.get(int(reply_to))
            if referenced is None or referenced.channel_id != channel.id:
                raise ApiError(
                    400,
                    INVALID_FORM_BODY,
                    "Invalid Form Body",
                    {
                        "message_reference": {
                            "_errors": [
                                {"code": "REPLIES_UNKNOWN_MESSAGE", "message": "Unknown message"}
                            ]
                        }
                    },
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
        fake._signal.notify()
        return stored

    def create_for_interaction(
        self,
        handle: InteractionHandle,
        body: Json,
        files: list[StoredAttachment],
        *,
        original: bool,
    ) -> StoredMessage:
        """A message created through an interaction (response or follow-up); dispatched
        as MESSAGE_CREATE unless ephemeral.
        """
        fake = self._fake
        channel = fake.channels[int(handle.payload["channel_id"])]
        user = handle.payload["member"]["user"]
        ephemeral = is_ephemeral(body.get("flags"))
        metadata: Json = {
            "id": str(handle.id),
            "type": handle.kind,
            "user": user,
            "authorizing_integration_owners": handle.payload["authorizing_integration_owners"],
        }
        extra: Json = {
            "webhook_id": str(fake.application_id),
            "application_id": str(fake.application_id),
            "interaction_metadata": metadata,
        }
        if handle.component_message is not None:
            # "responses to Message Components do not include [interaction], instead
            # including a message reference" (receiving-and-responding.mdx, Message
            # Interaction Object); the metadata names the message clicked on (message.mdx,
            # Message Component Interaction Metadata).
            clicked = handle.component_message
            metadata["interacted_message_id"] = str(clicked.id)
            extra["message_reference"] = {
                "type": 0,
                "message_id": str(clicked.id),
                "channel_id": str(clicked.channel_id),
                "guild_id": handle.payload["guild_id"],
            }
        else:
            metadata["name"] = handle.name
            extra["interaction"] = {
                "id": str(handle.id),
                "type": handle.kind,
                "name": handle.name,
                "user": user,
            }
        stored = self.create(
            channel,
            fake.bot_user,
            content=body.get("content") or "",
            embeds=body.get("embeds") or [],
            components=body.get("components") or [],
            files=files,
            allowed_mentions=body.get("allowed_mentions"),
            flags=int(body.get("flags") or 0),
            request=body,
            ephemeral=ephemeral,
            message_type=20 if original and not handle.is_component else 0,
            interaction_id=handle.id,
            extra=extra,
        )
        if not ephemeral:
            self.dispatch("MESSAGE_CREATE", stored)
        return stored

    def edit(
        self,
        stored: StoredMessage,
        body: Json,
        files: list[StoredAttachment],
        *,
        replace_attachments: bool = False,
    ) -> None:
        """Apply a PATCH (or a follow-up filling a deferral) and dispatch MESSAGE_UPDATE."""
        fake = self._fake
        data = stored.data
        was_loading = stored.loading
        if "content" in body:
            data["content"] = body["content"] or ""
        if "embeds" in body:
            data["embeds"] = [_normalize_embed(e) for e in body["embeds"] or []]
        if "components" in body:
            data["components"] = stored_components(body["components"])
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
        guild = fake.guilds[fake.channels[stored.channel_id].guild_id]
        _set_mentions(data, stored.allowed_mentions, guild, fake.users)
        data["edited_timestamp"] = None if was_loading else iso_now()
        stored.edits.append(body)
        if not stored.ephemeral:
            self.dispatch("MESSAGE_UPDATE", stored)
        fake._signal.notify()

    def delete(self, stored: StoredMessage) -> None:
        """Mark the message deleted (it stays stored) and dispatch MESSAGE_DELETE."""
        fake = self._fake
        stored.deleted = True
        if not stored.ephemeral:
            guild_id = fake.channels[stored.channel_id].guild_id
            payload = {
                "id": str(stored.id),
                "channel_id": str(stored.channel_id),
                "guild_id": str(guild_id),
            }
            fake.gateway.dispatch("MESSAGE_DELETE", payload, None)
        fake._signal.notify()

    def react(self, stored: StoredMessage, user: FakeUser, name: str) -> None:
        """`user` puts the emoji `name` on the message (once: a second time changes
        nothing): the reaction object's count (message.mdx, Reaction Object;
        MessageReactionResponse: burst "super" reactions are counted apart, and `me` is
        the bot's), who reacted (Get Reactions), and MESSAGE_REACTION_ADD
        (gateway-events.mdx) for the sessions with GUILD_MESSAGE_REACTIONS."""
        fake = self._fake
        reactors = stored.reactors.setdefault(name, [])
        if user.id in reactors:
            return
        reactors.append(user.id)
        is_bot = user.id == fake.bot_user.id
        reactions = stored.data.setdefault("reactions", [])
        for reaction in reactions:
            if reaction["emoji"]["name"] == name:
                reaction["count"] += 1
                reaction["count_details"]["normal"] += 1
                reaction["me"] = reaction["me"] or is_bot
                break
        else:
            reactions.append(
                {
                    "emoji": {"id": None, "name": name},
                    "count": 1,
                    "count_details": {"burst": 0, "normal": 1},
                    "me": is_bot,
                    "me_burst": False,
                    "burst_colors": [],
                }
            )
        guild = fake.guilds[fake.channels[stored.channel_id].guild_id]
        payload: Json = {
            "user_id": str(user.id),
            "channel_id": str(stored.channel_id),
            "message_id": str(stored.id),
            "guild_id": str(guild.id),
            "emoji": {"id": None, "name": name},
            "message_author_id": str(stored.author_id),
            "burst": False,
            "burst_colors": [],
            "type": 0,
        }
        member = guild.members.get(user.id)
        if member is not None:
            payload["member"] = member.payload()
        fake.gateway.dispatch("MESSAGE_REACTION_ADD", payload, None)
        fake._signal.notify()

    # -- visibility ----------------------------------------------------------------

    def dispatch(self, event: str, stored: StoredMessage) -> None:
        """MESSAGE_CREATE/UPDATE as the gateway shapes it: guild_id and the author's
        member added; content, embeds and attachments emptied for a session without the
        MESSAGE_CONTENT intent, unless the bot wrote the message or is mentioned in it.
        """
        fake = self._fake
        guild = fake.guilds[fake.channels[stored.channel_id].guild_id]
        data = dict(stored.data, guild_id=str(guild.id))
        member = guild.members.get(stored.author_id)
        if member is not None and "webhook_id" not in data:
            data["member"] = member.payload(with_user=False)
        exempt = self.content_exempt(stored)

        def shape(session: GatewaySession) -> Json:
            if exempt or session.intents & Intent.MESSAGE_CONTENT:
                return data
            return _without_content(data)

        fake.gateway.dispatch(event, data, shape)

    def content_exempt(self, stored: StoredMessage) -> bool:
        """Discord shows content to a bot lacking the intent only for its own messages
        and messages that mention it.
        """
        bot = self._fake.bot_user
        bot_id = str(bot.id)
        return stored.author_id == bot.id or any(u["id"] == bot_id for u in stored.data["mentions"])

    def rest_view(self, stored: StoredMessage) -> Json:
        """A message as REST serves it: content withheld unless the developer portal
        enables the MESSAGE_CONTENT intent (`FakeDiscord.privileged_intents`).
        """
        portal_intents = self._fake.privileged_intents
        if portal_intents & Intent.MESSAGE_CONTENT or self.content_exempt(stored):
            return stored.data
        return _without_content(stored.data)


def _without_content(data: Json) -> Json:
    return dict(data, content="", embeds=[], attachments=[], components=[])


def stored_components(components: list[Json] | None) -> list[Json]:
    """Components as Discord serves them back (openapi.json: ActionRowComponentResponse,
    ButtonComponentResponse): the fields sent, nulls left out, and every component an
    `id` (required in the responses), numbered 1, 2… in order where the bot gave none."""
    copied = [_without_nulls(c) for c in components or [] if isinstance(c, dict)]
    flat: list[Json] = []
    pending = list(copied)
    while pending:
        component = pending.pop(0)
        flat.append(component)
        pending[:0] = [c for c in component.get("components") or [] if isinstance(c, dict)]
    used = {c["id"] for c in flat if isinstance(c.get("id"), int)}
    next_id = 1
    for component in flat:
        if not isinstance(component.get("id"), int):
            while next_id in used:
                next_id += 1
            component["id"] = next_id
            used.add(next_id)
    return copied


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


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
