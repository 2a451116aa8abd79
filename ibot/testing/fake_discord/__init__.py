"""A Discord-compatible server on 127.0.0.1 that the real nextcord client talks to.

Discord cannot be reached from tests (or from the offline demo), so this one aiohttp app
serves the REST API under /api/v10, the gateway websocket at /gateway and attachment
bytes at signed URLs, /attachments/{id}/{filename}?ex=…&is=…&hm=…& (cdn.py). It keeps
Discord's rules where a bot can get them wrong in production:

- gateway: HELLO → IDENTIFY → READY + GUILD_CREATE; RESUME replays what the client
  missed; dispatches are filtered by the identified intents (no GUILD_MEMBERS: only the
  bot's member in GUILD_CREATE; no MESSAGE_CONTENT: empty content, embeds and
  attachments in MESSAGE_CREATE unless the bot wrote or is mentioned in the message,
  and in REST reads too when `privileged_intents` (the developer portal) lacks it);
  asking for a privileged intent the portal does not allow closes with 4014;
- the bot's own messages come back as MESSAGE_CREATE (a bot must ignore itself);
- forum posts: the starter message before, after or well after THREAD_CREATE
  (`create_forum_thread(starter=…)`, `deliver_starter`); a thread the bot is merely
  added to comes as THREAD_CREATE without `newly_created` (`add_bot_to_thread`);
- threads: posting in an archived thread unarchives it (THREAD_UPDATE); a locked one
  refuses a bot without MANAGE_THREADS (403 50013; 400 50083 when also archived); a
  deleted one answers 404 10003 (THREAD_DELETE sent); editing a thread (PATCH, tags,
  archiving) needs MANAGE_THREADS but for unarchiving an unlocked one, and an archived
  thread takes no edit that leaves it archived (400 50083); `tag_thread` is a
  moderator tagging a post (THREAD_UPDATE);
- attachments: a URL past its `ex`, or badly signed, answers 404 like Discord's CDN;
- messages: 2000-character content, embed limits (title 256, description 4096, 25
  fields, 6000 in all, 10 embeds) and empty messages answer Discord's 400s, 50035
  with Discord's `errors` tree (validation.py); allowed_mentions decides who is
  listed in `mentions`;
- rate limits (ratelimits.py, `fake.rate_limits`): a bucket per route and top-level
  resource (5 messages per 5 s per channel…), its X-RateLimit-* headers on every
  answer, and a 429 (scope `user`) for a request over it;
- permissions: computed per channel with its overwrites
  (`world.set_permission_overwrite`; ADMINISTRATOR bypasses them): interactions'
  `member.permissions` and
  `app_permissions`, and REST's 403s (50001 without VIEW_CHANNEL, 50013 without
  SEND_MESSAGES, or SEND_MESSAGES_IN_THREADS in a thread);
- interactions: acknowledge within 3 s and only once; follow-ups need an acknowledged
  interaction; the first follow-up after a deferral fills the "thinking…" message and
  keeps the deferral's ephemerality; the token's webhook answers 401 50027 after 15
  minutes (`token_lifetime_s`, on `fake.clock`); at most 25 autocomplete choices;
- message components: every message the bot writes (channel messages and edits,
  interaction responses, follow-ups and webhook edits) keeps its `components`, each
  given an `id`, served back by REST and in MESSAGE_CREATE/UPDATE; at most 5 action
  rows of 1 to 5 buttons, custom_id 1-100 characters, required (but on link buttons,
  which need a url) and unique in the message, label at most 80 (400 50035 with the
  `errors` tree); `click(member, message, custom_id)` sends INTERACTION_CREATE type 3
  (MESSAGE_COMPONENT) with the full message; the bot answers with a new message (4,
  ephemeral for the clicker only), or updates the clicked message (7, or 6 then PATCH
  @original); 6 and 7 are refused for slash commands;
- commands: stored and answered reshaped as Discord does (command_shapes.py), never
  echoed; at most 25 options and 25 choices;
- faults on demand (`fake.faults`): 429 with `Via` (per-route, global, shared), 5xx,
  the forum starter-message race (404 10008), a CDN download answering 403/404, and
  `drop_gateway(replay_last=N)` for duplicate deliveries.

Example::

    async with FakeDiscord() as fake:
        guild = fake.create_guild("iBot test")
        admin = fake.create_role(guild, "Admin", permissions=ADMINISTRATOR)
        alice = fake.create_member(guild, "alice", roles=[admin])
        forum = fake.create_forum(guild, "aide", tags=["python", "no-bot"])

        nextcord.http.Route.BASE = fake.base_url      # restore it afterwards
        bot = commands.Bot(intents=intents, guild_ready_timeout=0.05)
        task = asyncio.create_task(bot.start("fake-token"))
        ...                                            # wait for on_ready

        shot = fake.add_attachment("trace.png", png_bytes)
        thread = await fake.create_forum_thread(
            forum, author=alice, title="Erreur", content="Ça plante", tags=["python"],
            attachments=[shot],
        )
        reply = (await fake.wait_for(lambda: fake.messages_in(thread)))[0]
        assert reply.allowed_mentions == {"parse": []}

        handle = await fake.invoke_slash(guild, alice, thread, "ask-gpt",
                                         {"question": "…", "private": True, "image": shot})
        answer = await handle.wait_answer()
        assert handle.deferred and answer.ephemeral

`create_forum_thread` and the other actions return once the events were *sent*; the
client may not have processed them yet, so wait for its event (or for an effect with
``fake.wait_for``) before reading its cache.

Public API (see each docstring; the world-building methods are documented on `World`,
in world.py, which FakeDiscord forwards them to):

- lifecycle: ``FakeDiscord(token=None, bot_name="iBot", privileged_intents=…,
  ack_window_s=3.0)``, ``start()``, ``stop()``, ``async with``; ``base_url``,
  ``gateway_url``, ``http_url``, ``application_id``, ``bot_user``;
- world: ``create_user``, ``create_guild``, ``create_role``, ``create_member``,
  ``create_text_channel``, ``create_forum``, ``add_attachment``;
- users' actions (async, return once the client was sent the events):
  ``create_forum_thread`` (``starter="before"|"after"|"late"``, ``starter_misses``,
  ``announce``), ``deliver_starter``, ``add_bot_to_thread``, ``post_message``,
  ``archive_thread``, ``lock_thread``, ``delete_thread``, ``invoke_slash`` (→
  ``InteractionHandle``), ``click`` (a button: → ``InteractionHandle``, with
  ``is_component``, ``component_message``, ``updates``, ``updates_message`` and
  ``wait_update``), ``dispatch``, ``drop_gateway``;
- switches: ``privileged_intents`` (the developer portal's, changeable at any time),
  ``expire_attachment_urls()`` (the CDN's clock passes every URL handed out),
  ``clock`` (the fake's time, for the acknowledgement window, token lifetime, buckets
  and lasting faults), ``token_lifetime_s``, ``rate_limits`` (``enabled``, ``limits``,
  ``refused``), ``world.set_permission_overwrite``;
- inspection: ``messages_in``, ``history``, ``sent_by_bot``, ``message``,
  ``registered_commands``, ``interactions``, ``requests``, ``requests_to``,
  ``unknown_routes``, ``downloads``, ``identify_payloads``, ``resume_payloads``;
  ``wait_for``, ``flush``;
- faults: ``fake.faults.rate_limit``, ``global_rate_limit``, ``shared_rate_limit``,
  ``server_error``, ``error``, ``starter_message_race``, ``attachment_error``, ``clear``.
"""

from ibot.testing.fake_discord.constants import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    MANAGE_MESSAGES,
    MANAGE_THREADS,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    Intent,
    MessageFlag,
)
from ibot.testing.fake_discord.faults import Fault, Faults
from ibot.testing.fake_discord.interactions import InteractionHandle
from ibot.testing.fake_discord.model import (
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    StoredAttachment,
    StoredMessage,
)
from ibot.testing.fake_discord.server import FakeDiscord
from ibot.testing.fake_discord.wire import RecordedRequest, Upload

__all__ = [
    "ADMINISTRATOR",
    "ALL_PERMISSIONS",
    "DEFAULT_BOT_PERMISSIONS",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "MANAGE_MESSAGES",
    "MANAGE_THREADS",
    "SEND_MESSAGES",
    "VIEW_CHANNEL",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "Fault",
    "Faults",
    "Intent",
    "InteractionHandle",
    "MessageFlag",
    "RecordedRequest",
    "StoredAttachment",
    "StoredMessage",
    "Upload",
]
