"""Interactions: the INTERACTION_CREATE payload and what the bot answered.

Two kinds: a slash command (type 2, `build_interaction`) and a click on a message's
button (type 3 MESSAGE_COMPONENT, `build_component_interaction`: `data.custom_id` and
`component_type`, and the full `message` the button is on). A component interaction
may also be answered with type 6 DEFERRED_UPDATE_MESSAGE (acknowledge, edit later) or
7 UPDATE_MESSAGE (the callback's data edits the button's message); after either,
`@original` on its webhook is the button's message. Both are refused for a slash
command ("Only valid for component-based interactions").

Discord's rules the fake keeps, because a bot that breaks them fails in production:

- the bot must acknowledge (callback) within `ack_window_s` (3 s) of the interaction,
  else 404 Unknown interaction (10062), and only once, else 400 (40060);
- follow-ups need an acknowledged interaction, else 404 Unknown Webhook (10015);
- the token opens the webhook for 15 minutes (`token_lifetime_s`, on the fake's
  `clock`): later follow-ups, reads, edits and deletes get 401 Invalid Webhook Token
  (50027);
- an autocomplete result holds at most 25 choices (400 50035 otherwise);
- `member.permissions` and `app_permissions` are computed in the interaction's channel,
  its overwrites included (FakeGuild.permissions_in);
- after a deferral (type 5) the first follow-up *fills* the "thinking…" message: it
  becomes the original response and keeps the deferral's ephemerality, whatever flags
  it asks for; later follow-ups are new messages with their own flags, and so is the
  first one once the bot deleted the "thinking…" message.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ibot.testing.fake_discord.constants import (
    MAX_UPLOAD_BYTES,
    ButtonStyle,
    ComponentType,
    InteractionCallback,
    InteractionType,
    MessageFlag,
    OptionType,
)
from ibot.testing.fake_discord.model import (
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    StoredAttachment,
    StoredMessage,
)

if TYPE_CHECKING:
    from ibot.testing.fake_discord.server import FakeDiscord

Json = dict[str, Any]


@dataclass(eq=False)
class InteractionHandle:
    """One slash invocation or button click, and everything the bot did about it.

    `callbacks` are the raw POST /callback bodies; `original` the response message
    (a loading placeholder after a deferral, until edited or filled by a follow-up);
    `followups` every message created through POST /webhooks/{app}/{token}. For a
    click, `kind` is 3, `name` the button's custom_id, `component_message` the message
    the button is on and `updates` each edit of it through this interaction (a type-7
    callback's data, or a PATCH of `@original` after a type 6 or 7).
    """

    id: int
    token: str
    name: str
    payload: Json
    created_at: float
    _fake: FakeDiscord = field(repr=False)
    callbacks: list[Json] = field(default_factory=list)
    original: StoredMessage | None = None
    followups: list[StoredMessage] = field(default_factory=list)
    rejected: list[tuple[str, int]] = field(default_factory=list)  # (what, Discord code)
    kind: int = InteractionType.APPLICATION_COMMAND
    component_message: StoredMessage | None = None
    updates: list[Json] = field(default_factory=list)

    @property
    def is_component(self) -> bool:
        return self.kind == InteractionType.MESSAGE_COMPONENT

    @property
    def updates_message(self) -> bool:
        """Whether the bot answered a click by (deferring) an update of its message."""
        first = self.callbacks[0]["type"] if self.callbacks else None
        return first in (
            InteractionCallback.DEFERRED_UPDATE_MESSAGE,
            InteractionCallback.UPDATE_MESSAGE,
        )

    @property
    def acknowledged(self) -> bool:
        return bool(self.callbacks)

    @property
    def deferred(self) -> bool:
        first = self.callbacks[0]["type"] if self.callbacks else None
        return first == InteractionCallback.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE

    @property
    def ephemeral(self) -> bool:
        """Whether the original response is visible only to the invoking user."""
        return self.original is not None and self.original.ephemeral

    @property
    def messages(self) -> list[StoredMessage]:
        """Original response then follow-ups, each once, in creation order."""
        seen: dict[int, StoredMessage] = {}
        for msg in [self.original, *self.followups]:
            if msg is not None:
                seen.setdefault(msg.id, msg)
        return sorted(seen.values(), key=lambda m: m.id)

    async def wait_acknowledged(self, timeout: float = 5.0) -> Json:  # noqa: ASYNC109
        """The first callback body ({type, data}) once the bot sent it."""
        await self._fake.wait_for(lambda: self.callbacks, timeout=timeout)
        return self.callbacks[0]

    async def wait_followups(
        self,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[StoredMessage]:
        await self._fake.wait_for(lambda: len(self.followups) >= count, timeout=timeout)
        return list(self.followups)

    async def wait_answer(self, timeout: float = 5.0) -> StoredMessage:  # noqa: ASYNC109
        """The first message with something in it (not a bare "thinking…" placeholder)."""

        def answered() -> StoredMessage | None:
            return next((m for m in self.messages if not m.loading), None)

        return await self._fake.wait_for(answered, timeout=timeout)

    async def wait_update(self, count: int = 1, timeout: float = 5.0) -> StoredMessage:  # noqa: ASYNC109
        """The button's message once this interaction edited it `count` times."""
        await self._fake.wait_for(lambda: len(self.updates) >= count, timeout=timeout)
        assert self.component_message is not None
        return self.component_message


def build_interaction(
    fake: FakeDiscord,
    guild: FakeGuild,
    member: FakeMember,
    channel: FakeChannel,
    command: Json,
    options: Mapping[str, Any],
    locale: str,
) -> InteractionHandle:
    """An INTERACTION_CREATE (type 2) for `command` as registered, with `options` typed
    by the command's own option definitions and attachments/users/roles/channels
    carried in `data.resolved`, as Discord sends them.
    """
    interaction_id = fake._snowflakes.next()
    token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48)
    data_options, resolved = _encode_options(fake, guild, channel, member, command, options)
    data: Json = {
        "id": command["id"],
        "name": command["name"],
        "type": command.get("type", 1),
        "options": data_options,
    }
    if resolved:
        data["resolved"] = resolved
    if command.get("guild_id"):
        data["guild_id"] = str(command["guild_id"])
    payload = _base_payload(fake, guild, member, channel, interaction_id, token, locale)
    payload["data"] = data
    return InteractionHandle(
        id=interaction_id,
        token=token,
        name=command["name"],
        payload=payload,
        created_at=fake.clock(),
        _fake=fake,
    )


def build_component_interaction(
    fake: FakeDiscord,
    guild: FakeGuild,
    member: FakeMember,
    message: StoredMessage,
    custom_id: str,
    locale: str,
) -> InteractionHandle:
    """An INTERACTION_CREATE (type 3, MESSAGE_COMPONENT) for a click on the button
    `custom_id` of `message`: `data: {custom_id, component_type: 2}` and the full
    `message` (receiving-and-responding.mdx, Interaction Structure: "For components…,
    the message they were attached to"). LookupError if the message has no such
    button; ValueError if it is disabled or a link button (they send no interaction).
    """
    button = find_button(message.data.get("components") or [], custom_id)
    if button is None:
        raise LookupError(f"message {message.id} has no button with custom_id {custom_id!r}")
    if button.get("disabled") or button.get("style") in (ButtonStyle.LINK, ButtonStyle.PREMIUM):
        raise ValueError(f"button {custom_id!r} cannot be clicked (disabled, link or premium)")
    channel = fake.channels[message.channel_id]
    interaction_id = fake._snowflakes.next()
    token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48)
    payload = _base_payload(fake, guild, member, channel, interaction_id, token, locale)
    payload["type"] = InteractionType.MESSAGE_COMPONENT
    payload["data"] = {"custom_id": custom_id, "component_type": ComponentType.BUTTON}
    payload["message"] = dict(message.data)
    return InteractionHandle(
        id=interaction_id,
        token=token,
        name=custom_id,
        payload=payload,
        created_at=fake.clock(),
        _fake=fake,
        kind=InteractionType.MESSAGE_COMPONENT,
        component_message=message,
    )


def find_button(components: list[Json], custom_id: str) -> Json | None:
    """The button with this custom_id anywhere in the component tree, or None."""
    for component in components:
        if (
            component.get("type") == ComponentType.BUTTON
            and component.get("custom_id") == custom_id
        ):
            return component
        inner = find_button(component.get("components") or [], custom_id)
        if inner is not None:
            return inner
    return None


def _base_payload(
    fake: FakeDiscord,
    guild: FakeGuild,
    member: FakeMember,
    channel: FakeChannel,
    interaction_id: int,
    token: str,
    locale: str,
) -> Json:
    """The fields every guild interaction carries, whatever its type."""
    bot_member = guild.members[fake.bot_user.id]
    member_payload = member.payload()
    # "Guild member data for the invoking user, including permissions": in this channel,
    # overwrites included, as is app_permissions (the bot's, "in the source location").
    member_payload["permissions"] = str(guild.permissions_in(member, channel))
    return {
        "id": str(interaction_id),
        "application_id": str(fake.application_id),
        "type": InteractionType.APPLICATION_COMMAND,
        "guild_id": str(guild.id),
        "channel_id": str(channel.id),
        "channel": channel.payload(),
        "member": member_payload,
        "token": token,
        "version": 1,
        "app_permissions": str(guild.permissions_in(bot_member, channel)),
        "locale": locale,
        "guild_locale": "fr",
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(guild.id)},
        "context": 0,
        "attachment_size_limit": MAX_UPLOAD_BYTES,
    }


def _encode_options(
    fake: FakeDiscord,
    guild: FakeGuild,
    channel: FakeChannel,
    member: FakeMember,
    command: Json,
    options: Mapping[str, Any],
) -> tuple[list[Json], Json]:
    definitions = {o["name"]: o for o in command.get("options", [])}
    unknown = set(options) - set(definitions)
    if unknown:
        raise ValueError(f"/{command['name']} has no option(s) {sorted(unknown)}")
    missing = [n for n, o in definitions.items() if o.get("required") and n not in options]
    if missing:
        raise ValueError(f"/{command['name']} needs option(s) {missing}")
    encoded: list[Json] = []
    resolved: Json = {}
    for name, value in options.items():
        kind = definitions[name]["type"]
        encoded.append({"name": name, "type": kind, "value": _encode_value(kind, value)})
        _resolve(guild, channel, member, kind, value, resolved)
    return encoded, resolved


def _encode_value(kind: int, value: Any) -> Any:
    if kind in (
        OptionType.ATTACHMENT,
        OptionType.USER,
        OptionType.CHANNEL,
        OptionType.ROLE,
        OptionType.MENTIONABLE,
    ):
        return str(getattr(value, "id", value))
    if kind in (OptionType.SUB_COMMAND, OptionType.SUB_COMMAND_GROUP):
        raise NotImplementedError("sub-commands are not supported by FakeDiscord.invoke_slash")
    return value


def _resolve(
    guild: FakeGuild,
    channel: FakeChannel,
    invoker: FakeMember,
    kind: int,
    value: Any,
    resolved: Json,
) -> None:
    """Fill `data.resolved` the way Discord does for object-typed options: a member's
    permissions in the interaction's channel; a channel's `permissions`, the invoking
    user's computed permissions in it (channel.mdx)."""
    if isinstance(value, StoredAttachment):
        resolved.setdefault("attachments", {})[str(value.id)] = value.payload(ephemeral=True)
    elif isinstance(value, FakeMember | FakeUser):
        user = value.user if isinstance(value, FakeMember) else value
        resolved.setdefault("users", {})[str(user.id)] = user.payload()
        member = guild.members.get(user.id)
        if member is not None:
            member_payload = member.payload(with_user=False)
            member_payload["permissions"] = str(guild.permissions_in(member, channel))
            resolved.setdefault("members", {})[str(user.id)] = member_payload
    elif isinstance(value, FakeRole):
        resolved.setdefault("roles", {})[str(value.id)] = value.payload()
    elif isinstance(value, FakeChannel):
        payload = value.payload()
        payload["permissions"] = str(guild.permissions_in(invoker, value))
        resolved.setdefault("channels", {})[str(value.id)] = payload
    elif kind == OptionType.ATTACHMENT:
        raise TypeError("an attachment option needs a StoredAttachment (fake.add_attachment)")


def is_ephemeral(flags: int | None) -> bool:
    return bool((flags or 0) & MessageFlag.EPHEMERAL)
