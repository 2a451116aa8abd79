"""FakeDiscord driven by the real nextcord client: what the bot layer will rely on.

Each test starts a fake server and a nextcord Bot pointed at it (Route.BASE swapped
and restored), waits for on_ready through an event, and closes the bot at the end.
"""

from __future__ import annotations

import asyncio
import io
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nextcord
import pytest
from nextcord.ext import commands
from nextcord.http import Route
from PIL import Image

from ibot.testing.fake_discord import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    MANAGE_MESSAGES,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMember,
    FakeRole,
    Intent,
)

TOKEN = "fake-token"


@dataclass
class World:
    guild: FakeGuild
    admin_role: FakeRole
    mod_role: FakeRole
    admin: FakeMember
    alice: FakeMember
    forum: FakeChannel
    text: FakeChannel


class Events:
    """Counts nextcord events; `wait` wakes on each one (no polling)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        self._changed = asyncio.Event()

    def record(self, name: str, *args: Any) -> None:
        self.seen[name].append(args)
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, name: str, count: int = 1, timeout: float = 5.0) -> list[tuple]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while len(self.seen[name]) < count:
                await self._changed.wait()
        return self.seen[name]


@dataclass
class Running:
    bot: commands.Bot
    events: Events
    task: asyncio.Task[None]
    stopped: bool = field(default=False)


Configure = Callable[[commands.Bot], None]
Launch = Callable[..., Awaitable[Running]]

RECORDED_EVENTS = (
    "ready",
    "resumed",
    "thread_create",
    "thread_update",
    "message",
    "message_edit",
    "socket_event_type",
    "application_command_error",
)
FULL_INTENTS = nextcord.Intents(
    guilds=True, members=True, guild_messages=True, message_content=True
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN) as server:
        yield server


@pytest.fixture
def world(fake: FakeDiscord) -> World:
    guild = fake.create_guild("iBot test")
    admin_role = fake.create_role(guild, "Admin", permissions=ADMINISTRATOR)
    mod_role = fake.create_role(guild, "Modo", permissions=MANAGE_MESSAGES)
    return World(
        guild=guild,
        admin_role=admin_role,
        mod_role=mod_role,
        admin=fake.create_member(guild, "root", roles=[admin_role]),
        alice=fake.create_member(guild, "alice"),
        forum=fake.create_forum(guild, "aide", tags=["python", "no-bot"]),
        text=fake.create_text_channel(guild, "général"),
    )


@pytest.fixture
async def launch(fake: FakeDiscord) -> AsyncIterator[Launch]:
    """Start a Bot against the fake; `configure` adds commands before it connects."""
    original_base = Route.BASE
    Route.BASE = fake.base_url
    started: list[Running] = []

    async def start(
        configure: Configure | None = None, intents: nextcord.Intents = FULL_INTENTS
    ) -> Running:
        bot = commands.Bot(intents=intents, guild_ready_timeout=0.05)
        events = Events()
        for name in RECORDED_EVENTS:
            bot.add_listener(_recorder(events, name), f"on_{name}")
        if configure is not None:
            configure(bot)
        running = Running(bot, events, asyncio.create_task(bot.start(TOKEN)))
        started.append(running)
        ready = asyncio.create_task(events.wait("ready"))
        done, _ = await asyncio.wait({ready, running.task}, return_when=asyncio.FIRST_COMPLETED)
        if running.task in done:  # start() failed: surface its error
            ready.cancel()
            running.task.result()
        await ready
        return running

    try:
        yield start
    finally:
        for running in started:
            await running.bot.close()
            await running.task
        Route.BASE = original_base


def _recorder(events: Events, name: str) -> Callable[..., Awaitable[None]]:
    async def listener(*args: Any) -> None:
        events.record(name, *args)

    return listener


def _png(width: int = 3, height: int = 2) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(out, format="PNG")
    return out.getvalue()


async def _fetch_starter(thread: nextcord.Thread, tries: int = 5) -> nextcord.Message:
    """What the bot layer must do: retry while Discord says Unknown Message (10008)."""
    for attempt in range(tries):
        try:
            return await thread.fetch_message(thread.id)
        except nextcord.NotFound as exc:
            if exc.code != 10008 or attempt == tries - 1:
                raise
            await asyncio.sleep(0)
    raise AssertionError("unreachable")


# 1. login, READY, GUILD_CREATE ------------------------------------------------------


async def test_ready_fills_the_cache_with_the_world(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    guild = running.bot.get_guild(world.guild.id)

    assert guild is not None and guild.name == "iBot test"
    forum = guild.get_channel(world.forum.id)
    assert isinstance(forum, nextcord.ForumChannel)
    assert [tag.name for tag in forum.available_tags] == ["python", "no-bot"]
    assert isinstance(guild.get_channel(world.text.id), nextcord.TextChannel)
    assert {"Admin", "Modo", "@everyone"} <= {role.name for role in guild.roles}
    alice = guild.get_member(world.alice.id)
    assert alice is not None and alice.name == "alice"
    assert guild.get_member(world.admin.id).guild_permissions.administrator
    assert running.bot.user.id == fake.bot_user.id
    assert fake.identify_payloads[-1]["intents"] == FULL_INTENTS.value


async def test_without_privileged_intents_members_and_content_are_withheld(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    fake.privileged_intents = 0  # none enabled in the developer portal either
    intents = nextcord.Intents(guilds=True, guild_messages=True)
    running = await launch(intents=intents)
    guild = running.bot.get_guild(world.guild.id)

    assert guild.get_member(world.alice.id) is None  # only the bot's own member is sent
    assert guild.get_member(fake.bot_user.id) is not None
    secret = await fake.post_message(world.text, world.alice, "secret text")
    await fake.post_message(world.text, world.alice, "hello bot", mentions=[fake.bot_user])
    seen = await running.events.wait("message", 2)
    assert [args[0].content for args in seen] == ["", f"<@{fake.bot_user.id}> hello bot"]
    fetched = await running.bot.get_channel(world.text.id).fetch_message(secret.id)
    assert fetched.content == ""  # REST withholds it too
    assert fake.identify_payloads[-1]["intents"] & Intent.MESSAGE_CONTENT == 0


async def test_privileged_intent_not_enabled_in_portal_is_refused(fake: FakeDiscord) -> None:
    fake.privileged_intents = 0
    original_base = Route.BASE
    Route.BASE = fake.base_url
    bot = commands.Bot(intents=FULL_INTENTS, guild_ready_timeout=0.05)
    try:
        with pytest.raises(nextcord.PrivilegedIntentsRequired):
            await asyncio.wait_for(bot.start(TOKEN), 5)
    finally:
        await bot.close()
        Route.BASE = original_base


# 2. forum thread, starter message, attachment -----------------------------------------


async def test_forum_thread_reaches_the_bot_with_tags_and_attachment(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    image = _png(3, 2)
    shot = fake.add_attachment("trace.png", image)

    created = await fake.create_forum_thread(
        world.forum,
        author=world.alice,
        title="Erreur pip",
        content="Ça plante",
        tags=["python"],
        attachments=[shot],
    )

    [(thread,)] = await running.events.wait("thread_create")
    assert thread.id == created.id and thread.name == "Erreur pip"
    assert thread.parent_id == world.forum.id
    assert isinstance(thread.parent, nextcord.ForumChannel)
    assert [tag.name for tag in thread.applied_tags] == ["python"]
    starter = await thread.fetch_message(thread.id)
    assert starter.content == "Ça plante" and starter.author.id == world.alice.id
    [attachment] = starter.attachments
    assert (attachment.filename, attachment.content_type) == ("trace.png", "image/png")
    assert (attachment.width, attachment.height) == (3, 2)
    assert await attachment.read() == image


# 3. the bot posts -------------------------------------------------------------------


async def test_bot_message_keeps_embed_file_and_allowed_mentions(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    channel = running.bot.get_channel(world.text.id)

    await channel.send(
        content=f"{world.alice.mention} voici",
        embed=nextcord.Embed(title="Réponse", description="Utilise un venv."),
        file=nextcord.File(io.BytesIO(b"print('ok')\n"), filename="fix.py"),
        allowed_mentions=nextcord.AllowedMentions.none(),
    )

    [posted] = fake.messages_in(world.text)
    assert posted.embeds[0]["title"] == "Réponse"
    assert posted.file_bytes("fix.py") == b"print('ok')\n"
    assert posted.allowed_mentions == {"parse": []}
    assert posted.data["mentions"] == []  # nobody pinged although the text mentions alice
    # Like Discord, the bot receives its own message back and must ignore it.
    seen = await running.events.wait("message")
    assert seen[-1][0].author.id == fake.bot_user.id


async def test_too_long_message_is_refused_like_discord(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    channel = running.bot.get_channel(world.text.id)

    with pytest.raises(nextcord.HTTPException) as caught:
        await channel.send("x" * 2001)

    assert (caught.value.status, caught.value.code) == (400, 50035)
    assert fake.messages_in(world.text) == []


async def test_history_is_served_newest_first_with_cursors(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    posted = [await fake.post_message(world.text, world.alice, f"m{i}") for i in range(5)]
    channel = running.bot.get_channel(world.text.id)

    newest = [m.content async for m in channel.history(limit=2)]
    after = [m.content async for m in channel.history(after=nextcord.Object(posted[2].id))]

    assert newest == ["m4", "m3"]
    assert after == ["m3", "m4"]


async def test_bot_edits_reacts_types_and_deletes(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    channel = running.bot.get_channel(world.text.id)

    async with channel.typing():
        message = await channel.send("brouillon")
    await message.edit(content="version finale")
    [(_, after)] = await running.events.wait("message_edit")
    await message.add_reaction("👍")
    stored = fake.message(message.id)

    assert after.content == "version finale" and stored.content == "version finale"
    [reaction] = stored.data["reactions"]
    assert reaction["emoji"] == {"id": None, "name": "👍"}
    assert (reaction["count"], reaction["me"], reaction["count_details"]) == (
        1,
        True,
        {"burst": 0, "normal": 1},
    )
    assert len(fake.requests_to("POST", f"/channels/{world.text.id}/typing")) == 1
    await message.delete()
    assert fake.messages_in(world.text) == [] and stored.deleted


async def test_bot_tags_archives_and_lists_threads(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    created = await fake.create_forum_thread(world.forum, author=world.alice, title="Q")
    [(thread,)] = await running.events.wait("thread_create")
    no_bot = thread.parent.get_tag(world.forum.tag_id("no-bot"))

    assert [t.id for t in await thread.guild.active_threads()] == [created.id]
    await thread.edit(applied_tags=[no_bot], archived=True)
    await running.events.wait("thread_update")
    archived = [t.id async for t in thread.parent.archived_threads()]

    assert created.archived and created.applied_tags == [no_bot.id]
    assert archived == [created.id]
    member = await thread.guild.fetch_member(world.alice.id)
    assert member.name == "alice"


async def test_a_moderator_tagging_a_post_updates_the_bots_thread(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    created = await fake.create_forum_thread(world.forum, author=world.alice, title="Q")
    await running.events.wait("thread_create")

    await fake.tag_thread(created, ["python", "no-bot"])
    [(before, after)] = await running.events.wait("thread_update")

    assert before.applied_tags == []
    assert [tag.name for tag in after.applied_tags] == ["python", "no-bot"]


async def test_thread_edits_follow_the_docs_permissions(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    guild = fake.create_guild("no threads managed", bot_permissions=DEFAULT_EVERYONE_PERMISSIONS)
    forum = fake.create_forum(guild, "aide", tags=["python"])
    alice = fake.create_member(guild, "alice2")
    running = await launch()
    created = await fake.create_forum_thread(forum, author=alice, title="Q")
    [(thread,)] = await running.events.wait("thread_create")

    with pytest.raises(nextcord.Forbidden) as refused:  # archiving needs MANAGE_THREADS
        await thread.edit(archived=True)
    assert refused.value.code == 50013 and not created.archived
    await fake.archive_thread(created)
    await thread.edit(archived=False)  # SEND_MESSAGES is enough to reopen an unlocked one
    assert not created.archived

    managed = await fake.create_forum_thread(world.forum, author=world.alice, title="R")
    [_, (other,)] = await running.events.wait("thread_create", count=2)
    await fake.archive_thread(managed)
    with pytest.raises(nextcord.HTTPException) as archived:  # an edit must reopen it
        await other.edit(name="renamed")
    assert archived.value.status == 400 and archived.value.code == 50083
    assert managed.name == "R" and managed.archived


async def test_wrong_token_cannot_log_in(fake: FakeDiscord) -> None:
    original_base = Route.BASE
    Route.BASE = fake.base_url
    bot = commands.Bot(intents=FULL_INTENTS)
    try:
        with pytest.raises(nextcord.LoginFailure):
            await bot.login("not-the-token")
    finally:
        await bot.close()
        Route.BASE = original_base


# 4. slash commands ------------------------------------------------------------------


def _ping_command(guild_id: int, *, defer_ephemeral: bool | None = None) -> Configure:
    def configure(bot: commands.Bot) -> None:
        @bot.slash_command(name="ping", description="Pong", guild_ids=[guild_id])
        async def ping(
            interaction: nextcord.Interaction,
            private: bool = nextcord.SlashOption(required=False, default=False),
        ) -> None:
            hidden = private if defer_ephemeral is None else defer_ephemeral
            await interaction.response.defer(ephemeral=hidden)
            await interaction.followup.send("pong", ephemeral=private)
            await interaction.followup.send("encore", ephemeral=private)

    return configure


async def test_slash_command_is_synced_deferred_and_answered(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    await launch(_ping_command(world.guild.id))
    [command] = await fake.wait_for(lambda: fake.registered_commands(world.guild))
    assert command["name"] == "ping" and command["options"][0]["name"] == "private"

    private = await fake.invoke_slash(
        world.guild, world.alice, world.text, "ping", {"private": True}
    )
    public = await fake.invoke_slash(
        world.guild, world.alice, world.text, "ping", {"private": False}
    )

    await private.wait_followups(2)
    await public.wait_followups(2)
    assert private.deferred and private.callbacks[0] == {"type": 5, "data": {"flags": 64}}
    assert [m.content for m in private.messages] == ["pong", "encore"]
    assert all(m.ephemeral for m in private.messages)
    assert [m.content for m in fake.messages_in(world.text)] == ["pong", "encore"]


async def test_first_followup_after_deferral_keeps_the_deferral_visibility(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    await launch(_ping_command(world.guild.id, defer_ephemeral=False))
    await fake.wait_for(lambda: fake.registered_commands(world.guild))

    handle = await fake.invoke_slash(
        world.guild, world.alice, world.text, "ping", {"private": True}
    )
    first, second = await handle.wait_followups(2)

    assert first is handle.original and not first.ephemeral  # filled the public "thinking…"
    assert second.ephemeral
    assert [m.content for m in fake.messages_in(world.text)] == ["pong"]


async def test_attachment_option_and_original_response_edit(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    def configure(bot: commands.Bot) -> None:
        @bot.slash_command(name="ask-gpt", description="Ask", guild_ids=[world.guild.id])
        async def ask(
            interaction: nextcord.Interaction,
            question: str,
            image: nextcord.Attachment = nextcord.SlashOption(required=False),  # noqa: B008
        ) -> None:
            await interaction.response.send_message("…", ephemeral=True)
            data = await image.read()
            await interaction.edit_original_message(content=f"{question} {len(data)} octets")

    await launch(configure)
    await fake.wait_for(lambda: fake.registered_commands(world.guild))
    shot = fake.add_attachment("capture.png", _png())

    handle = await fake.invoke_slash(
        world.guild, world.admin, world.text, "ask-gpt", {"question": "Quoi ?", "image": shot}
    )
    await fake.wait_for(lambda: handle.original and handle.original.edits)

    assert handle.callbacks[0]["type"] == 4 and handle.ephemeral
    assert handle.original.content == f"Quoi ? {len(shot.data)} octets"
    member = handle.payload["member"]
    assert int(member["permissions"]) == ALL_PERMISSIONS  # the Admin role grants everything
    assert fake.messages_in(world.text) == []


async def test_bulk_overwrite_replaces_guild_commands(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch(_ping_command(world.guild.id))
    [ping] = await fake.wait_for(lambda: fake.registered_commands(world.guild))

    new = [
        {"name": "ping", "description": "Pong", "type": 1},
        {"name": "stats", "description": "Stats", "type": 1},
    ]
    answer = await running.bot.http.bulk_upsert_guild_commands(
        fake.application_id, world.guild.id, new
    )

    assert [c["name"] for c in fake.registered_commands(world.guild)] == ["ping", "stats"]
    assert answer[0]["id"] == ping["id"]  # same name and type: the id is kept


async def test_late_acknowledgement_is_refused(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch(_ping_command(world.guild.id))
    await fake.wait_for(lambda: fake.registered_commands(world.guild))
    fake.ack_window_s = 0.0  # every acknowledgement arrives "too late"

    handle = await fake.invoke_slash(world.guild, world.alice, world.text, "ping")
    [(_, error)] = await running.events.wait("application_command_error")

    assert isinstance(error.original, nextcord.NotFound) and error.original.code == 10062
    assert handle.rejected == [("callback", 10062)]
    assert not handle.acknowledged and handle.messages == []


# 5. REST faults -----------------------------------------------------------------------


async def test_starter_message_race_is_survived_by_retrying(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    created = await fake.create_forum_thread(
        world.forum, author=world.alice, title="Q", content="Question"
    )
    fake.faults.starter_message_race(created, times=2)
    [(thread,)] = await running.events.wait("thread_create")

    starter = await _fetch_starter(thread)

    assert starter.content == "Question"
    tries = fake.requests_to("GET", f"/channels/{created.id}/messages/{created.id}")
    assert [(r.status, r.fault) for r in tries] == [
        (404, "starter_message_race"),
        (404, "starter_message_race"),
        (200, None),
    ]


async def test_rate_limited_post_is_retried_and_lands_once(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    fake.faults.rate_limit(f"/channels/{world.text.id}/messages", method="POST", retry_after=0.05)

    await running.bot.get_channel(world.text.id).send("hello")

    posts = fake.requests_to("POST", f"/channels/{world.text.id}/messages")
    assert [r.status for r in posts] == [429, 200]
    assert [m.content for m in fake.messages_in(world.text)] == ["hello"]


async def test_bad_gateway_post_is_retried_and_lands_once(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    fake.faults.server_error(f"/channels/{world.text.id}/messages", method="POST", status=502)

    await running.bot.get_channel(world.text.id).send("hello")  # nextcord waits 1 s

    posts = fake.requests_to("POST", f"/channels/{world.text.id}/messages")
    assert [r.status for r in posts] == [502, 200]
    assert [m.content for m in fake.messages_in(world.text)] == ["hello"]


async def test_service_unavailable_is_not_retried_by_nextcord(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    fake.faults.server_error(f"/channels/{world.text.id}/messages", method="POST", status=503)

    with pytest.raises(nextcord.DiscordServerError):
        await running.bot.get_channel(world.text.id).send("hello")

    assert fake.messages_in(world.text) == []


# 6. gateway drop, RESUME, replayed dispatches ---------------------------------------------


async def test_dropped_gateway_resumes_and_replays_the_last_dispatch(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    await fake.post_message(world.text, world.alice, "once?")
    await running.events.wait("message")

    assert await fake.drop_gateway(replay_last=1) == 1
    await running.events.wait("resumed")
    seen = await running.events.wait("message", 2)

    assert [args[0].content for args in seen] == ["once?", "once?"]  # a duplicate delivery
    [session_id] = fake.gateway.sessions
    assert fake.resume_payloads[-1]["session_id"] == session_id


async def test_replayed_thread_create_is_deduplicated_by_nextcord_cache(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    await fake.create_forum_thread(world.forum, author=world.alice, title="Q", content="?")
    await running.events.wait("thread_create")

    await fake.drop_gateway(replay_last=2, code=None)  # abort: the client sees 1006
    await running.events.wait("resumed")
    await fake.post_message(world.text, world.alice, "after")
    await running.events.wait("message", 3)  # starter twice, then "after"

    socket_events = [args[0] for args in running.events.seen["socket_event_type"]]
    assert socket_events.count("THREAD_CREATE") == 2
    assert len(running.events.seen["thread_create"]) == 1  # known thread: no second event


async def test_events_sent_while_disconnected_arrive_after_resume(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()

    await fake.drop_gateway()
    await fake.post_message(world.text, world.alice, "missed")
    await running.events.wait("resumed")
    seen = await running.events.wait("message")

    assert [args[0].content for args in seen] == ["missed"]


# 7. unknown routes --------------------------------------------------------------------


async def test_unknown_route_is_a_json_404_and_recorded(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    running = await launch()
    route = Route("GET", "/guilds/{guild_id}/emojis", guild_id=world.guild.id)

    with pytest.raises(nextcord.NotFound) as caught:
        await running.bot.http.request(route)

    assert caught.value.text == "404: Not Found"
    assert [r.path for r in fake.unknown_routes] == [f"/guilds/{world.guild.id}/emojis"]
