"""The fields of the gateway events the fake dispatches, transcribed from Discord's docs.

Read by event_check.py, which checks every dispatch's `d` against these tables. Each row
is written as in the docs' tables: a `?` after the name means the field may be missing,
a `?` before the type means it may be null. Types:

- scalars: ``snowflake`` (a string of digits), ``string``, ``integer``, ``number``
  (float, double), ``boolean``, ``timestamp`` (ISO8601), ``null`` (a field whose only
  value is null: role tags), ``any``; ``integer|string`` for "integer or string";
- ``object``: a JSON object whose table is not transcribed here (stickers, polls, voice
  states, presences…: the fake only ever sends them empty);
- a table's name (``User``, ``Channel``…), ``partial X`` (fields typed as in X, none
  required: the docs' "partial" objects), ``array<X>``, ``map<X>`` (the docs' "map of
  snowflakes to X" and "dictionary"), and the unions below (one table or another,
  chosen by a field's value, as the docs choose them).

Where an event adds fields to an object (THREAD_CREATE's `newly_created`, MESSAGE_CREATE's
`guild_id`, `member`, `mentions`…), the event's section is followed: its rows replace or
extend the object's, and each field keeps the section it was read from.

Sources: the pages copied in ../shared/specs/discord-api-docs/ (gateway-events.mdx,
channel.mdx, message.mdx, receiving-and-responding.mdx, opcodes-and-status-codes.mdx),
and, for the user, guild, guild member, role, emoji and application objects, which that
copy lacks, the same commit of github.com/discord/discord-api-docs (c98d64b, 2026-08-06):
developers/resources/user.mdx, guild.mdx, emoji.mdx, application.mdx and
developers/topics/permissions.mdx. The message components (action rows and buttons),
whose reference page the copy lacks too, are read from ../shared/specs/discord-api-spec/
openapi.json (ActionRowComponentResponse, ButtonComponentResponse,
ComponentEmojiResponse: what Discord serves back in a message).

The gateway close codes (opcodes-and-status-codes.mdx, "Gateway Close Event Codes") are at
the end: the fake's `drop` and the protocol tests read them.
"""

from __future__ import annotations

from dataclasses import dataclass

_GE = "discord-api-docs/gateway-events.mdx"
_CH = "discord-api-docs/channel.mdx"
_MSG = "discord-api-docs/message.mdx"
_IX = "discord-api-docs/receiving-and-responding.mdx"
_UPSTREAM = "(github.com/discord/discord-api-docs@c98d64b, not in shared/specs)"
_USER = f"discord-api-docs/developers/resources/user.mdx {_UPSTREAM}"
_GUILD = f"discord-api-docs/developers/resources/guild.mdx {_UPSTREAM}"
_PERMS = f"discord-api-docs/developers/topics/permissions.mdx {_UPSTREAM}"
_EMOJI = f"discord-api-docs/developers/resources/emoji.mdx {_UPSTREAM}"
_APP = f"discord-api-docs/developers/resources/application.mdx {_UPSTREAM}"


def _at(page: str, anchor: str) -> str:
    """`page#anchor`, the anchor put before the page's upstream note if it has one."""
    name, _, note = page.partition(" ")
    return f"{name}#{anchor}" + (f" {note}" if note else "")


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: str  # without the nullability mark
    required: bool  # no `?` after the name in the docs
    nullable: bool  # a `?` before the type in the docs (or the type `null`)
    spec: str  # the page and section the row was read from


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    spec: str
    fields: dict[str, Field]


@dataclass(frozen=True, slots=True)
class Union:
    """One of several tables, chosen by the value of `key` in the object itself or, with
    `on_parent`, in the object that holds it (an interaction's `type` decides its `data`).
    `default` applies to the other values ("any": not checked)."""

    name: str
    spec: str
    key: str
    cases: dict[object, str]
    default: str
    on_parent: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    spec: str  # the event's own section
    body: str  # the type of its `d`


TABLES: dict[str, Table] = {}
UNIONS: dict[str, Union] = {}
EVENTS: dict[str, Event] = {}


def _row(name: str, kind: str, spec: str) -> Field:
    required = not name.endswith("?")
    nullable = kind.startswith("?") or kind == "null"
    return Field(name.rstrip("?"), kind.lstrip("?"), required, nullable, spec)


def _table(name: str, spec: str, *rows: tuple[str, str]) -> Table:
    table = Table(name, spec, {f.name: f for f in (_row(n, k, spec) for n, k in rows)})
    TABLES[name] = table
    return table


def _extend(
    name: str, base: Table, spec: str, *rows: tuple[str, str], drop: tuple[str, ...] = ()
) -> Table:
    """`base` with the rows of an event's own section added (or replacing base's)."""
    fields = {k: f for k, f in base.fields.items() if k not in drop}
    fields.update({f.name: f for f in (_row(n, k, spec) for n, k in rows)})
    table = Table(name, spec, fields)
    TABLES[name] = table
    return table


def _union(union: Union) -> None:
    UNIONS[union.name] = union


def _event(name: str, spec: str, body: str) -> None:
    EVENTS[name] = Event(name, spec, body)


# -- users, guilds, members, roles, emojis (upstream pages) -------------------------------

_table(
    "User",
    _at(_USER, "user-object-user-structure"),
    ("id", "snowflake"),
    ("username", "string"),
    ("discriminator", "string"),
    ("global_name", "?string"),
    ("avatar", "?string"),
    ("bot?", "boolean"),
    ("system?", "boolean"),
    ("mfa_enabled?", "boolean"),
    ("banner?", "?string"),
    ("accent_color?", "?integer"),
    ("locale?", "string"),
    ("verified?", "boolean"),
    ("email?", "?string"),
    ("flags?", "integer"),
    ("premium_type?", "integer"),
    ("public_flags?", "integer"),
    ("avatar_decoration_data?", "?object"),
    ("collectibles?", "?object"),
    ("primary_guild?", "?object"),
)

GUILD_MEMBER = _table(
    "GuildMember",
    _at(_GUILD, "guild-member-object-guild-member-structure"),
    ("user?", "User"),
    ("nick?", "?string"),
    ("avatar?", "?string"),
    ("banner?", "?string"),
    ("roles", "array<snowflake>"),
    ("joined_at", "?timestamp"),
    ("premium_since?", "?timestamp"),
    ("deaf", "boolean"),
    ("mute", "boolean"),
    ("flags", "integer"),
    ("pending?", "boolean"),
    ("permissions?", "string"),
    ("communication_disabled_until?", "?timestamp"),
    ("avatar_decoration_data?", "?object"),
    ("collectibles?", "?object"),
)

_table(
    "Role",
    _at(_PERMS, "role-object-role-structure"),
    ("id", "snowflake"),
    ("name", "string"),
    ("color", "integer"),
    ("colors", "RoleColors"),
    ("hoist", "boolean"),
    ("icon?", "?string"),
    ("unicode_emoji?", "?string"),
    ("position", "integer"),
    ("permissions", "string"),
    ("managed", "boolean"),
    ("mentionable", "boolean"),
    ("tags?", "RoleTags"),
    ("flags", "integer"),
)

_table(
    "RoleTags",
    _at(_PERMS, "role-object-role-tags-structure"),
    ("bot_id?", "snowflake"),
    ("integration_id?", "snowflake"),
    ("premium_subscriber?", "null"),
    ("subscription_listing_id?", "snowflake"),
    ("available_for_purchase?", "null"),
    ("guild_connections?", "null"),
)

_table(
    "RoleColors",
    _at(_PERMS, "role-object-role-colors-object"),
    ("primary_color", "integer"),
    ("secondary_color", "?integer"),
    ("tertiary_color", "?integer"),
)

_table(
    "Emoji",
    _at(_EMOJI, "emoji-object-emoji-structure"),
    ("id", "?snowflake"),
    ("name", "?string"),  # "(can be null only in reaction emoji objects)"
    ("roles?", "array<snowflake>"),
    ("user?", "User"),
    ("require_colons?", "boolean"),
    ("managed?", "boolean"),
    ("animated?", "boolean"),
    ("available?", "boolean"),
)

GUILD = _table(
    "Guild",
    _at(_GUILD, "guild-object-guild-structure"),
    ("id", "snowflake"),
    ("name", "string"),
    ("icon", "?string"),
    ("icon_hash?", "?string"),
    ("splash", "?string"),
    ("discovery_splash", "?string"),
    ("owner?", "boolean"),
    ("owner_id", "snowflake"),
    ("permissions?", "string"),
    ("region?", "?string"),
    ("afk_channel_id", "?snowflake"),
    ("afk_timeout", "integer"),
    ("widget_enabled?", "boolean"),
    ("widget_channel_id?", "?snowflake"),
    ("verification_level", "integer"),
    ("default_message_notifications", "integer"),
    ("explicit_content_filter", "integer"),
    ("roles", "array<Role>"),
    ("emojis", "array<Emoji>"),
    ("features", "array<string>"),
    ("mfa_level", "integer"),
    ("application_id", "?snowflake"),
    ("system_channel_id", "?snowflake"),
    ("system_channel_flags", "integer"),
    ("rules_channel_id", "?snowflake"),
    ("max_presences?", "?integer"),
    ("max_members?", "integer"),
    ("vanity_url_code", "?string"),
    ("description", "?string"),
    ("banner", "?string"),
    ("premium_tier", "integer"),
    ("premium_subscription_count?", "integer"),
    ("preferred_locale", "string"),
    ("public_updates_channel_id", "?snowflake"),
    ("max_video_channel_users?", "integer"),
    ("max_stage_video_channel_users?", "integer"),
    ("approximate_member_count?", "integer"),
    ("approximate_presence_count?", "integer"),
    ("welcome_screen?", "object"),
    ("nsfw_level", "integer"),
    ("stickers?", "array<object>"),
    ("premium_progress_bar_enabled", "boolean"),
    ("safety_alerts_channel_id", "?snowflake"),
    ("incidents_data", "?object"),
)

# No table in the docs: "A partial guild object", shown by its example {id, unavailable}.
_table(
    "UnavailableGuild",
    _at(_GUILD, "unavailable-guild-object-example-unavailable-guild"),
    ("id", "snowflake"),
    ("unavailable?", "boolean"),
)

# -- channels and threads (channel.mdx) ---------------------------------------------------

CHANNEL = _table(
    "Channel",
    f"{_CH}#channel-object-channel-structure",
    ("id", "snowflake"),
    ("type", "integer"),
    ("guild_id?", "snowflake"),
    ("position?", "integer"),
    ("permission_overwrites?", "array<Overwrite>"),
    ("name?", "?string"),
    ("topic?", "?string"),
    ("nsfw?", "boolean"),
    ("last_message_id?", "?snowflake"),
    ("bitrate?", "integer"),
    ("user_limit?", "integer"),
    ("rate_limit_per_user?", "integer"),
    ("recipients?", "array<User>"),
    ("icon?", "?string"),
    ("owner_id?", "snowflake"),
    ("application_id?", "?snowflake"),
    ("managed?", "boolean"),
    ("parent_id?", "?snowflake"),
    ("last_pin_timestamp?", "?timestamp"),
    ("rtc_region?", "?string"),
    ("video_quality_mode?", "integer"),
    ("message_count?", "integer"),
    ("member_count?", "integer"),
    ("thread_metadata?", "ThreadMetadata"),
    ("member?", "ThreadMember"),
    ("default_auto_archive_duration?", "integer"),
    ("permissions?", "string"),
    ("app_permissions?", "string"),
    ("flags?", "integer"),
    ("total_message_sent?", "integer"),
    ("available_tags?", "array<ForumTag>"),
    ("applied_tags?", "array<snowflake>"),
    ("default_reaction_emoji?", "?DefaultReaction"),
    ("default_thread_rate_limit_per_user?", "integer"),
    ("default_sort_order?", "?integer"),
    ("default_forum_layout?", "integer"),
)

_table(
    "Overwrite",
    f"{_CH}#overwrite-object-overwrite-structure",
    ("id", "snowflake"),
    ("type", "integer"),  # "int"
    ("allow", "string"),
    ("deny", "string"),
)

_table(
    "ThreadMetadata",
    f"{_CH}#thread-metadata-object-thread-metadata-structure",
    ("archived", "boolean"),
    ("auto_archive_duration", "integer"),
    ("archive_timestamp", "timestamp"),
    ("locked", "boolean"),
    ("invitable?", "boolean"),
    ("create_timestamp?", "?timestamp"),
)

_table(
    "ThreadMember",
    f"{_CH}#thread-member-object-thread-member-structure",
    ("id?", "snowflake"),
    ("user_id?", "snowflake"),
    ("join_timestamp", "timestamp"),
    ("flags", "integer"),
    ("member?", "GuildMember"),
)

_table(
    "DefaultReaction",
    f"{_CH}#default-reaction-object-default-reaction-structure",
    ("emoji_id", "?snowflake"),
    ("emoji_name", "?string"),
)

_table(
    "ForumTag",
    f"{_CH}#forum-tag-object-forum-tag-structure",
    ("id", "snowflake"),
    ("name", "string"),
    ("moderated", "boolean"),
    ("emoji_id", "?snowflake"),
    ("emoji_name", "?string"),
)

# -- messages (message.mdx) ---------------------------------------------------------------

MESSAGE = _table(
    "Message",
    f"{_MSG}#message-object-message-structure",
    ("id", "snowflake"),
    ("channel_id", "snowflake"),
    ("author", "User"),
    ("content", "string"),
    ("timestamp", "timestamp"),
    ("edited_timestamp", "?timestamp"),
    ("tts", "boolean"),
    ("mention_everyone", "boolean"),
    ("mentions", "array<User>"),
    ("mention_roles", "array<snowflake>"),  # "array of role object ids"
    ("mention_channels?", "array<ChannelMention>"),
    ("attachments", "array<Attachment>"),
    ("embeds", "array<Embed>"),
    ("reactions?", "array<Reaction>"),
    ("nonce?", "integer|string"),
    ("pinned", "boolean"),
    ("webhook_id?", "snowflake"),
    ("type", "integer"),
    ("activity?", "object"),
    ("application?", "object"),  # partial application
    ("application_id?", "snowflake"),
    ("flags?", "integer"),
    ("message_reference?", "MessageReference"),
    ("message_snapshots?", "array<object>"),
    ("referenced_message?", "?Message"),
    ("interaction_metadata?", "MessageInteractionMetadata"),
    ("interaction?", "MessageInteraction"),
    ("thread?", "Channel"),
    ("components?", "array<MessageComponent>"),
    ("sticker_items?", "array<object>"),
    ("stickers?", "array<object>"),
    ("position?", "integer"),
    ("role_subscription_data?", "object"),
    ("resolved?", "ResolvedData"),
    ("poll?", "object"),
    ("call?", "MessageCall"),
    ("shared_client_theme?", "object"),
)

# -- message components (openapi.json, the schemas of a message's components) -----------

_OPENAPI = "discord-api-spec/openapi.json#/components/schemas/"
# "array of message components" (message.mdx, components): told apart by their `type`;
# the fake checks action rows (1) and buttons (2), the only ones it stores knowingly.
_union(
    Union(
        "MessageComponent",
        f"{_MSG}#message-object-message-structure; {_OPENAPI}MessageResponse",
        key="type",
        cases={1: "ActionRowComponent", 2: "ButtonComponent"},
        default="any",
    )
)
_table(
    "ActionRowComponent",
    f"{_OPENAPI}ActionRowComponentResponse",
    ("type", "integer"),
    ("id", "integer"),
    ("components", "array<MessageComponent>"),
)
_table(
    "ButtonComponent",
    f"{_OPENAPI}ButtonComponentResponse",
    ("type", "integer"),
    ("id", "integer"),
    ("custom_id?", "string"),
    ("style", "integer"),
    ("label?", "string"),
    ("disabled?", "boolean"),
    ("emoji?", "ComponentEmoji"),
    ("url?", "?string"),
    ("sku_id?", "snowflake"),
)
_table(
    "ComponentEmoji",
    f"{_OPENAPI}ComponentEmojiResponse",
    ("id?", "snowflake"),
    ("name", "string"),
    ("animated?", "boolean"),
)

_table(
    "MessageCall",
    f"{_MSG}#message-call-object-message-call-object-structure",
    ("participants", "array<snowflake>"),
    ("ended_timestamp?", "?timestamp"),
)

_table(
    "MessageReference",
    f"{_MSG}#message-reference-structure",
    ("type?", "integer"),
    ("message_id?", "snowflake"),
    ("channel_id?", "snowflake"),
    ("guild_id?", "snowflake"),
    ("fail_if_not_exists?", "boolean"),
)

_table(
    "Reaction",
    f"{_MSG}#reaction-object-reaction-structure",
    ("count", "integer"),
    ("count_details", "ReactionCountDetails"),
    ("me", "boolean"),
    ("me_burst", "boolean"),
    ("emoji", "partial Emoji"),
    ("burst_colors", "array<any>"),  # "array"
)

_table(
    "ReactionCountDetails",
    f"{_MSG}#reaction-count-details-object-reaction-count-details-structure",
    ("burst", "integer"),
    ("normal", "integer"),
)

_table(
    "Embed",
    f"{_MSG}#embed-object-embed-structure",
    ("title?", "string"),
    ("type?", "string"),
    ("description?", "string"),
    ("url?", "string"),
    ("timestamp?", "timestamp"),
    ("color?", "integer"),
    ("footer?", "EmbedFooter"),
    ("image?", "EmbedImage"),
    ("thumbnail?", "EmbedImage"),
    ("video?", "EmbedVideo"),
    ("provider?", "EmbedProvider"),
    ("author?", "EmbedAuthor"),
    ("fields?", "array<EmbedField>"),
    ("flags?", "integer"),
)

_table(
    "EmbedVideo",
    f"{_MSG}#embed-object-embed-video-structure",
    ("url?", "string"),
    ("proxy_url?", "string"),
    ("height?", "integer"),
    ("width?", "integer"),
    ("content_type?", "string"),
    ("placeholder?", "string"),
    ("placeholder_version?", "integer"),
    ("description?", "string"),
    ("flags?", "integer"),
)

_table(
    "EmbedImage",
    f"{_MSG}#embed-object-embed-image-structure",
    ("url", "string"),
    ("proxy_url?", "string"),
    ("height?", "integer"),
    ("width?", "integer"),
    ("content_type?", "string"),
    ("placeholder?", "string"),
    ("placeholder_version?", "integer"),
    ("description?", "string"),
    ("flags?", "integer"),
)

_table(
    "EmbedProvider",
    f"{_MSG}#embed-object-embed-provider-structure",
    ("name?", "string"),
    ("url?", "string"),
)

_table(
    "EmbedAuthor",
    f"{_MSG}#embed-object-embed-author-structure",
    ("name", "string"),
    ("url?", "string"),
    ("icon_url?", "string"),
    ("proxy_icon_url?", "string"),
)

_table(
    "EmbedFooter",
    f"{_MSG}#embed-object-embed-footer-structure",
    ("text", "string"),
    ("icon_url?", "string"),
    ("proxy_icon_url?", "string"),
)

_table(
    "EmbedField",
    f"{_MSG}#embed-object-embed-field-structure",
    ("name", "string"),
    ("value", "string"),
    ("inline?", "boolean"),
)

_table(
    "Attachment",
    f"{_MSG}#attachment-object-attachment-structure",
    ("id", "snowflake"),
    ("filename", "string"),
    ("title?", "string"),
    ("description?", "string"),
    ("content_type?", "string"),
    ("size", "integer"),
    ("url", "string"),
    ("proxy_url", "string"),
    ("height?", "?integer"),
    ("width?", "?integer"),
    ("placeholder?", "string"),
    ("placeholder_version?", "integer"),
    ("ephemeral?", "boolean"),
    ("duration_secs?", "number"),
    ("waveform?", "string"),
    ("flags?", "integer"),
    ("clip_participants?", "array<User>"),
    ("clip_created_at?", "timestamp"),
    ("application?", "?object"),
)

_table(
    "ChannelMention",
    f"{_MSG}#channel-mention-object-channel-mention-structure",
    ("id", "snowflake"),
    ("guild_id", "snowflake"),
    ("type", "integer"),
    ("name", "string"),
)

_METADATA = f"{_MSG}#message-interaction-metadata-object"
_table(
    "ApplicationCommandInteractionMetadata",
    f"{_METADATA}-application-command-interaction-metadata-structure",
    ("id", "snowflake"),
    ("type", "integer"),
    ("user", "User"),
    ("authorizing_integration_owners", "map<snowflake>"),
    ("original_response_message_id?", "snowflake"),
    ("target_user?", "User"),
    ("target_message_id?", "snowflake"),
)
_table(
    "MessageComponentInteractionMetadata",
    f"{_METADATA}-message-component-interaction-metadata-structure",
    ("id", "snowflake"),
    ("type", "integer"),
    ("user", "User"),
    ("authorizing_integration_owners", "map<snowflake>"),
    ("original_response_message_id?", "snowflake"),
    ("interacted_message_id", "snowflake"),
)
_table(
    "ModalSubmitInteractionMetadata",
    f"{_METADATA}-modal-submit-interaction-metadata-structure",
    ("id", "snowflake"),
    ("type", "integer"),
    ("user", "User"),
    ("authorizing_integration_owners", "map<snowflake>"),
    ("original_response_message_id?", "snowflake"),
    ("triggering_interaction_metadata", "MessageInteractionMetadata"),
)
# "One of Application Command, Message Component or Modal Submit Interaction Metadata",
# told apart by the interaction type (2, 3, 5; 4, autocomplete, creates no message).
_union(
    Union(
        "MessageInteractionMetadata",
        f"{_MSG}#message-interaction-metadata-object",
        key="type",
        cases={
            2: "ApplicationCommandInteractionMetadata",
            3: "MessageComponentInteractionMetadata",
            5: "ModalSubmitInteractionMetadata",
        },
        default="any",
    )
)

# -- interactions (receiving-and-responding.mdx) ------------------------------------------

_table(
    "Interaction",
    f"{_IX}#interaction-object-interaction-structure",
    ("id", "snowflake"),
    ("application_id", "snowflake"),
    ("type", "integer"),
    ("data?", "InteractionData"),
    ("guild?", "partial Guild"),
    ("guild_id?", "snowflake"),
    ("channel?", "partial Channel"),
    ("channel_id?", "snowflake"),
    ("member?", "GuildMember"),
    ("user?", "User"),
    ("token", "string"),
    ("version", "integer"),
    ("message?", "Message"),
    ("app_permissions", "string"),
    ("locale?", "string"),
    ("guild_locale?", "string"),
    ("entitlements", "array<object>"),
    ("authorizing_integration_owners", "map<snowflake>"),
    ("context?", "integer"),
    ("attachment_size_limit", "integer"),
)

# A click on a component (type 3 MESSAGE_COMPONENT) always carries its data and the
# message the component is on: "This is always present on application command, message
# component, and modal submit interaction types" (data); "For components or modals
# triggered by components, the message they were attached to" (message).
_extend(
    "ComponentInteraction",
    TABLES["Interaction"],
    f"{_IX}#interaction-object-interaction-structure (data and message, for type 3)",
    ("data", "InteractionData"),
    ("message", "Message"),
)
_union(
    Union(
        "InteractionCreate",
        f"{_GE}#interaction-create; {_IX}#interaction-object-interaction-type",
        key="type",
        cases={3: "ComponentInteraction"},
        default="Interaction",
    )
)

_union(
    Union(
        "InteractionData",
        f"{_IX}#interaction-object-interaction-data",
        key="type",
        cases={
            2: "ApplicationCommandData",
            3: "MessageComponentData",
            4: "ApplicationCommandData",
            5: "ModalSubmitData",
        },
        default="any",
        on_parent=True,
    )
)

_table(
    "ApplicationCommandData",
    f"{_IX}#interaction-object-application-command-data-structure",
    ("id", "snowflake"),
    ("name", "string"),
    ("type", "integer"),
    ("resolved?", "ResolvedData"),
    ("options?", "array<ApplicationCommandInteractionDataOption>"),
    ("guild_id?", "snowflake"),
    ("target_id?", "snowflake"),
)

_table(
    "MessageComponentData",
    f"{_IX}#interaction-object-message-component-data-structure",
    ("custom_id", "string"),
    ("component_type", "integer"),
    ("values?", "array<any>"),
    ("resolved?", "ResolvedData"),
)

_table(
    "ModalSubmitData",
    f"{_IX}#interaction-object-modal-submit-data-structure",
    ("custom_id", "string"),
    ("components", "array<object>"),
    ("resolved?", "ResolvedData"),
)

_table(
    "ResolvedData",
    f"{_IX}#interaction-object-resolved-data-structure",
    ("users?", "map<User>"),
    ("members?", "map<ResolvedMember>"),
    ("roles?", "map<Role>"),
    ("channels?", "map<partial Channel>"),
    ("messages?", "map<partial Message>"),
    ("attachments?", "map<Attachment>"),
)

# "Partial Member objects are missing user, deaf and mute fields".
_extend(
    "ResolvedMember",
    GUILD_MEMBER,
    f"{_IX}#interaction-object-resolved-data-structure",
    drop=("user", "deaf", "mute"),
)

_table(
    "ApplicationCommandInteractionDataOption",
    f"{_IX}#interaction-object-application-command-interaction-data-option-structure",
    ("name", "string"),
    ("type", "integer"),
    ("value?", "string|integer|number|boolean"),
    ("options?", "array<ApplicationCommandInteractionDataOption>"),
    ("focused?", "boolean"),
)

_table(
    "MessageInteraction",
    f"{_IX}#message-interaction-object-message-interaction-structure",
    ("id", "snowflake"),
    ("type", "integer"),
    ("name", "string"),
    ("user", "User"),
    ("member?", "partial GuildMember"),
)

# -- the events' own tables and extra fields (gateway-events.mdx) -------------------------

_table(
    "Ready",
    f"{_GE}#ready-ready-event-fields",
    ("v", "integer"),
    ("user", "User"),
    ("guilds", "array<UnavailableGuild>"),
    ("session_id", "string"),
    ("resume_gateway_url", "string"),
    ("shard?", "array<integer>"),
    ("application", "ReadyApplication"),
)
# "partial application object: Contains id and flags" (types from application.mdx).
_table(
    "ReadyApplication",
    f"{_GE}#ready-ready-event-fields; {_at(_APP, 'application-object-application-structure')}",
    ("id", "snowflake"),
    ("flags", "integer"),
)

_extend(
    "GuildCreate",
    GUILD,
    f"{_GE}#guild-create-guild-create-extra-fields",
    ("joined_at", "timestamp"),
    ("large", "boolean"),
    ("unavailable?", "boolean"),
    ("member_count", "integer"),
    ("voice_states", "array<object>"),
    ("members", "array<GuildMember>"),
    ("channels", "array<Channel>"),
    ("threads", "array<Channel>"),
    ("presences", "array<object>"),
    ("stage_instances", "array<object>"),
    ("guild_scheduled_events", "array<object>"),
    ("soundboard_sounds", "array<object>"),
)
# "An available Guild: a guild object with extra fields … An unavailable Guild: an
# unavailable guild object."
_union(
    Union(
        "GuildCreatePayload",
        f"{_GE}#guild-create",
        key="unavailable",
        cases={True: "UnavailableGuild"},
        default="GuildCreate",
    )
)

_table(
    "GuildRoleEvent",
    f"{_GE}#guild-role-create-guild-role-create-event-fields",
    ("guild_id", "snowflake"),
    ("role", "Role"),
)

_table(
    "GuildRoleDelete",
    f"{_GE}#guild-role-delete-guild-role-delete-event-fields",
    ("guild_id", "snowflake"),
    ("role_id", "snowflake"),
)

_extend(
    "GuildMemberAdd",
    GUILD_MEMBER,
    f"{_GE}#guild-member-add-guild-member-add-extra-fields",
    ("guild_id", "snowflake"),
)

_table(
    "GuildMemberRemove",
    f"{_GE}#guild-member-remove-guild-member-remove-event-fields",
    ("guild_id", "snowflake"),
    ("user", "User"),
)

_table(
    "GuildMembersChunk",
    f"{_GE}#guild-members-chunk-guild-members-chunk-event-fields",
    ("guild_id", "snowflake"),
    ("members", "array<GuildMember>"),
    ("chunk_index", "integer"),
    ("chunk_count", "integer"),
    ("not_found?", "array<any>"),
    ("presences?", "array<object>"),
    ("nonce?", "string"),
)

# "When a thread is created, includes an additional newly_created boolean field. When
# being added to an existing private thread, includes a thread member object."
_extend(
    "ThreadCreate",
    CHANNEL,
    f"{_GE}#thread-create",
    ("newly_created?", "boolean"),
    ("member?", "ThreadMember"),
)

# "a subset of the channel object, containing just the id, guild_id, parent_id, and type
# fields" (their types from the channel object).
_table(
    "ThreadDelete",
    f"{_GE}#thread-delete",
    ("id", "snowflake"),
    ("guild_id", "snowflake"),
    ("parent_id", "?snowflake"),
    ("type", "integer"),
)

_table(
    "ThreadListSync",
    f"{_GE}#thread-list-sync-thread-list-sync-event-fields",
    ("guild_id", "snowflake"),
    ("channel_ids?", "array<snowflake>"),
    ("threads", "array<Channel>"),
    ("members", "array<ThreadMember>"),
)

_MESSAGE_CREATE = f"{_GE}#message-create-message-create-extra-fields"
# "array of user objects, optionally with an additional partial member field".
_extend("MentionedUser", TABLES["User"], _MESSAGE_CREATE, ("member?", "partial GuildMember"))
_extend(
    "MessageCreate",
    MESSAGE,
    _MESSAGE_CREATE,
    ("guild_id?", "snowflake"),
    ("member?", "partial GuildMember"),
    ("mentions", "array<MentionedUser>"),
    ("channel_type?", "integer"),
)

_table(
    "MessageDelete",
    f"{_GE}#message-delete-message-delete-event-fields",
    ("id", "snowflake"),
    ("channel_id", "snowflake"),
    ("guild_id?", "snowflake"),
)

_table(
    "MessageReactionAdd",
    f"{_GE}#message-reaction-add-message-reaction-add-event-fields",
    ("user_id", "snowflake"),
    ("channel_id", "snowflake"),
    ("message_id", "snowflake"),
    ("guild_id?", "snowflake"),
    ("member?", "GuildMember"),
    ("emoji", "partial Emoji"),
    ("message_author_id?", "snowflake"),
    ("burst", "boolean"),
    ("burst_colors?", "array<string>"),
    ("type", "integer"),
)

# -- the events ---------------------------------------------------------------------------

_event("READY", f"{_GE}#ready", "Ready")
_event("RESUMED", f"{_GE}#resumed", "any")  # no fields documented
_event("GUILD_CREATE", f"{_GE}#guild-create", "GuildCreatePayload")
_event("GUILD_UPDATE", f"{_GE}#guild-update", "Guild")
_event("GUILD_DELETE", f"{_GE}#guild-delete", "UnavailableGuild")
_event("GUILD_ROLE_CREATE", f"{_GE}#guild-role-create", "GuildRoleEvent")
_event("GUILD_ROLE_UPDATE", f"{_GE}#guild-role-update", "GuildRoleEvent")
_event("GUILD_ROLE_DELETE", f"{_GE}#guild-role-delete", "GuildRoleDelete")
_event("GUILD_MEMBER_ADD", f"{_GE}#guild-member-add", "GuildMemberAdd")
_event("GUILD_MEMBER_REMOVE", f"{_GE}#guild-member-remove", "GuildMemberRemove")
_event("GUILD_MEMBERS_CHUNK", f"{_GE}#guild-members-chunk", "GuildMembersChunk")
_event("CHANNEL_CREATE", f"{_GE}#channel-create", "Channel")
_event("CHANNEL_UPDATE", f"{_GE}#channel-update", "Channel")
_event("CHANNEL_DELETE", f"{_GE}#channel-delete", "Channel")
_event("THREAD_CREATE", f"{_GE}#thread-create", "ThreadCreate")
_event("THREAD_UPDATE", f"{_GE}#thread-update", "Channel")
_event("THREAD_DELETE", f"{_GE}#thread-delete", "ThreadDelete")
_event("THREAD_LIST_SYNC", f"{_GE}#thread-list-sync", "ThreadListSync")
_event("MESSAGE_CREATE", f"{_GE}#message-create", "MessageCreate")
_event("MESSAGE_UPDATE", f"{_GE}#message-update", "MessageCreate")  # "the same extra fields"
_event("MESSAGE_DELETE", f"{_GE}#message-delete", "MessageDelete")
_event("MESSAGE_REACTION_ADD", f"{_GE}#message-reaction-add", "MessageReactionAdd")
_event("INTERACTION_CREATE", f"{_GE}#interaction-create", "InteractionCreate")


# -- gateway close codes (opcodes-and-status-codes.mdx) -----------------------------------

CLOSE_CODES_SPEC = "discord-api-docs/opcodes-and-status-codes.mdx#gateway-gateway-close-event-codes"


@dataclass(frozen=True, slots=True)
class CloseCode:
    code: int
    description: str
    reconnect: bool  # the table's "Reconnect" column
    new_session: bool  # the explanation says to start a new session (no RESUME)

    @property
    def resumable(self) -> bool:
        """Whether a client may RESUME its session after this close."""
        return self.reconnect and not self.new_session


CLOSE_CODES: dict[int, CloseCode] = {
    c.code: c
    for c in (
        CloseCode(4000, "Unknown error", True, False),
        CloseCode(4001, "Unknown opcode", True, False),
        CloseCode(4002, "Decode error", True, False),
        CloseCode(4003, "Not authenticated", True, False),
        CloseCode(4004, "Authentication failed", False, False),
        CloseCode(4005, "Already authenticated", True, False),
        # "Reconnect and start a new session."
        CloseCode(4007, "Invalid `seq`", True, True),
        CloseCode(4008, "Rate limited", True, False),
        # "Your session timed out. Reconnect and start a new one."
        CloseCode(4009, "Session timed out", True, True),
        CloseCode(4010, "Invalid shard", False, False),
        CloseCode(4011, "Sharding required", False, False),
        CloseCode(4012, "Invalid API version", False, False),
        CloseCode(4013, "Invalid intent(s)", False, False),
        CloseCode(4014, "Disallowed intent(s)", False, False),
    )
}
