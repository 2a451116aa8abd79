"""The fake gateway against Discord's docs: opcodes, close codes and the events' fields.

Opcodes and close codes as gateway.mdx and opcodes-and-status-codes.mdx describe them,
seen by a raw websocket client (what the server sends) and by nextcord (how the client
reacts): HELLO first, heartbeat → ACK, IDENTIFY → READY, a bad token → 4004, a disallowed
intent → 4014, RESUME → replay then RESUMED, op 7 RECONNECT, op 9 INVALID_SESSION's `d`,
and which close codes let the client resume. Then the docs' field tables
(ibot/testing/fake_discord/event_fields.py): their transcription checked against the
copied docs pages, the checker (event_check.py) on payloads made wrong on purpose, and
every event of a world that grows while a client is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nextcord
import pytest
from nextcord.ext import commands
from nextcord.http import Route

from ibot.testing.fake_discord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, Intent
from ibot.testing.fake_discord.event_check import problems
from ibot.testing.fake_discord.event_fields import CLOSE_CODES, TABLES, Field
from ibot.testing.spec_violations import Violation

TOKEN = "fake-token"
DOCS = Path(__file__).resolve().parents[1].parent / "shared" / "specs" / "discord-api-docs"
ALL_INTENTS = (
    Intent.GUILDS
    | Intent.GUILD_MEMBERS
    | Intent.GUILD_MESSAGES
    | Intent.GUILD_MESSAGE_REACTIONS
    | Intent.MESSAGE_CONTENT
)
Frame = dict[str, Any]


@dataclass
class World:
    guild: FakeGuild
    alice: FakeMember
    text: FakeChannel
    forum: FakeChannel


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN) as server:
        yield server


@pytest.fixture
def world(fake: FakeDiscord) -> World:
    guild = fake.create_guild("iBot test")
    return World(
        guild=guild,
        alice=fake.create_member(guild, "alice"),
        text=fake.create_text_channel(guild, "général"),
        forum=fake.create_forum(guild, "aide", tags=["python"]),
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# -- a raw gateway client -------------------------------------------------------------


async def receive(ws: aiohttp.ClientWebSocketResponse) -> Frame:
    """The next frame the server sent (a JSON text frame)."""
    async with asyncio.timeout(5):
        msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a frame, got {msg.type} {msg.data}"
    frame: Frame = json.loads(msg.data)
    return frame


async def receive_until(ws: aiohttp.ClientWebSocketResponse, event: str) -> list[Frame]:
    """Frames up to and including the dispatch named `event`."""
    frames = [await receive(ws)]
    while frames[-1].get("t") != event:
        frames.append(await receive(ws))
    return frames


async def close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server closes the websocket; its close code."""
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return ws.close_code


async def connect(
    http: aiohttp.ClientSession, fake: FakeDiscord
) -> tuple[aiohttp.ClientWebSocketResponse, Frame]:
    """A new websocket and its HELLO."""
    ws = await http.ws_connect(fake.gateway_url)
    hello = await receive(ws)
    assert hello["op"] == 10
    return ws, hello


async def identify(
    ws: aiohttp.ClientWebSocketResponse, *, token: str = TOKEN, intents: int = ALL_INTENTS
) -> None:
    properties = {"os": "linux", "browser": "raw-test", "device": "raw-test"}
    await ws.send_json(
        {"op": 2, "d": {"token": token, "intents": int(intents), "properties": properties}}
    )


async def identified(
    http: aiohttp.ClientSession, fake: FakeDiscord
) -> tuple[aiohttp.ClientWebSocketResponse, list[Frame]]:
    """A connection past IDENTIFY, READY and the guilds' GUILD_CREATE."""
    ws, _ = await connect(http, fake)
    await identify(ws)
    frames = await receive_until(ws, "READY")
    for _guild in fake.guilds:
        frames += await receive_until(ws, "GUILD_CREATE")
    return ws, frames


async def resume(ws: aiohttp.ClientWebSocketResponse, session_id: str, seq: int) -> None:
    await ws.send_json({"op": 6, "d": {"token": TOKEN, "session_id": session_id, "seq": seq}})


# 1. HELLO, heartbeats, IDENTIFY ------------------------------------------------------


async def test_hello_comes_first_with_the_heartbeat_interval(
    fake: FakeDiscord, http: aiohttp.ClientSession
) -> None:
    ws, hello = await connect(http, fake)

    # gateway-events.mdx#hello; `s` and `t` are null when `op` is not 0 (#payload-structure)
    assert hello == {
        "op": 10,
        "d": {"heartbeat_interval": fake.gateway.heartbeat_interval_ms},
        "s": None,
        "t": None,
    }
    await ws.close()


async def test_a_heartbeat_is_acknowledged_with_op_11(
    fake: FakeDiscord, world: World, http: aiohttp.ClientSession
) -> None:
    ws, _ = await connect(http, fake)
    await ws.send_json({"op": 1, "d": None})  # before any dispatch: `d` is null
    assert (await receive(ws))["op"] == 11

    await identify(ws)
    ready = (await receive_until(ws, "READY"))[-1]
    await ws.send_json({"op": 1, "d": ready["s"]})
    ack = await receive(ws)
    while ack["op"] == 0:  # GUILD_CREATE may still be on its way
        ack = await receive(ws)

    assert ack == {"op": 11, "d": None, "s": None, "t": None}
    await ws.close()


async def test_identify_is_answered_with_ready_then_guild_create(
    fake: FakeDiscord, world: World, http: aiohttp.ClientSession
) -> None:
    ws, _ = await connect(http, fake)
    await identify(ws)
    ready = await receive(ws)
    guild_create = await receive(ws)

    assert (ready["op"], ready["t"], ready["s"]) == (0, "READY", 1)
    [session_id] = fake.gateway.sessions
    assert ready["d"]["session_id"] == session_id
    assert ready["d"]["resume_gateway_url"] == fake.gateway_url
    assert ready["d"]["guilds"] == [{"id": str(world.guild.id), "unavailable": True}]
    assert (guild_create["t"], guild_create["s"]) == ("GUILD_CREATE", 2)
    assert guild_create["d"]["id"] == str(world.guild.id)
    assert problems("READY", ready["d"]) == []
    assert problems("GUILD_CREATE", guild_create["d"]) == []
    await ws.close()


async def test_a_bad_token_closes_with_4004(
    fake: FakeDiscord, world: World, http: aiohttp.ClientSession
) -> None:
    ws, _ = await connect(http, fake)
    await identify(ws, token="not-the-token")

    assert await close_code(ws) == 4004  # Authentication failed
    assert fake.gateway.sessions == {}


async def test_a_privileged_intent_the_portal_does_not_enable_closes_with_4014(
    fake: FakeDiscord, world: World, http: aiohttp.ClientSession
) -> None:
    fake.privileged_intents = Intent.GUILD_MEMBERS  # MESSAGE_CONTENT not enabled
    allowed, _ = await connect(http, fake)
    await identify(allowed, intents=Intent.GUILDS | Intent.GUILD_MEMBERS)
    assert (await receive(allowed))["t"] == "READY"

    refused, _ = await connect(http, fake)
    await identify(refused, intents=Intent.GUILDS | Intent.MESSAGE_CONTENT)

    assert await close_code(refused) == 4014  # Disallowed intent(s)
    assert len(fake.gateway.sessions) == 1
    await allowed.close()


# 2. RESUME, op 7 RECONNECT, op 9 INVALID_SESSION -------------------------------------


async def test_resume_of_a_live_session_replays_what_follows_its_seq_then_resumed(
    fake: FakeDiscord, world: World, http: aiohttp.ClientSession
) -> None:
    first, frames = await identified(http, fake)
    await fake.post_message(world.text, world.alice, "seen by the first connection")
    posted = await receive_until(first, "MESSAGE_CREATE")
    ready = frames[0]

    second, _ = await connect(http, fake)
    await resume(second, ready["d"]["session_id"], seq=ready["s"])
    replayed = await receive_until(second, "RESUMED")

    # The missed events in order, with their sequence numbers, then RESUMED (gateway.mdx
    # #resuming); READY is not repeated.
    assert [(f["t"], f["s"]) for f in replayed] == [
        ("GUILD_CREATE", frames[1]["s"]),
        ("MESSAGE_CREATE", posted[-1]["s"]),
        ("RESUMED", posted[-1]["s"] + 1),
    ]
    assert replayed[1]["d"]["content"] == "seen by the first connection"
    assert await close_code(first) is not None  # the session moved to the new connection
    await fake.post_message(world.text, world.alice, "after the resume")
    assert (await receive(second))["d"]["content"] == "after the resume"
    await second.close()


async def test_resume_of_an_unknown_session_is_invalid_session_false(
    fake: FakeDiscord, world: World, http: aiohttp.ClientSession
) -> None:
    ws, _ = await connect(http, fake)
    await resume(ws, "no-such-session", seq=3)

    assert await receive(ws) == {"op": 9, "d": False, "s": None, "t": None}
    await ws.close()
    fresh, _ = await connect(http, fake)
    await identify(fresh)  # "must identify again", on a new connection
    assert (await receive(fresh))["t"] == "READY"
    await fresh.close()


async def test_the_server_can_send_op_7_reconnect(
    fake: FakeDiscord, world: World, http: aiohttp.ClientSession
) -> None:
    ws, frames = await identified(http, fake)

    assert await fake.gateway.request_reconnect() == 1

    assert await receive(ws) == {"op": 7, "d": None, "s": None, "t": None}
    await ws.close(code=4000)  # not 1000/1001: the session stays resumable
    again, _ = await connect(http, fake)
    await resume(again, frames[0]["d"]["session_id"], seq=frames[-1]["s"])
    assert [f["t"] for f in await receive_until(again, "RESUMED")] == ["RESUMED"]
    await again.close()


@pytest.mark.parametrize("resumable", [True, False])
async def test_invalid_session_d_says_whether_the_session_may_be_resumed(
    fake: FakeDiscord, world: World, http: aiohttp.ClientSession, resumable: bool
) -> None:
    ws, frames = await identified(http, fake)
    session_id = frames[0]["d"]["session_id"]

    await fake.gateway.invalidate_sessions(resumable=resumable)

    assert await receive(ws) == {"op": 9, "d": resumable, "s": None, "t": None}
    await ws.close(code=4000)
    again, _ = await connect(http, fake)
    await resume(again, session_id, seq=frames[-1]["s"])
    reply = await receive(again)
    if resumable:
        assert reply["t"] == "RESUMED"
    else:
        assert reply == {"op": 9, "d": False, "s": None, "t": None}
    await again.close()


# 3. how nextcord reacts ---------------------------------------------------------------


class Events:
    """nextcord events by name; `wait` wakes on each one (no polling)."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = defaultdict(int)
        self._changed = asyncio.Event()

    def record(self, name: str) -> None:
        self.seen[name] += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, name: str, count: int = 1) -> None:
        async with asyncio.timeout(5):
            while self.seen[name] < count:
                await self._changed.wait()


@dataclass
class Bot:
    client: QuickBot
    events: Events
    task: asyncio.Task[None]


Launch = Callable[[], Awaitable[Bot]]


class QuickBot(commands.Bot):
    """nextcord waits 5 s before each IDENTIFY but the first (its hook, for Discord's
    identify rate limit); this bot counts those IDENTIFYs instead of waiting."""

    reidentified = 0

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if not initial:
            self.reidentified += 1


@pytest.fixture
async def launch(fake: FakeDiscord) -> AsyncIterator[Launch]:
    original_base = Route.BASE
    Route.BASE = fake.base_url
    started: list[Bot] = []

    async def start() -> Bot:
        intents = nextcord.Intents(guilds=True, members=True, guild_messages=True)
        intents.message_content = True
        client = QuickBot(intents=intents, guild_ready_timeout=0.05)
        events = Events()
        for name in ("ready", "resumed"):
            client.add_listener(_recorder(events, name), f"on_{name}")
        bot = Bot(client, events, asyncio.create_task(client.start(TOKEN)))
        started.append(bot)
        await events.wait("ready")
        return bot

    try:
        yield start
    finally:
        for bot in started:
            await bot.client.close()
            # A task the close codes test saw end with its error re-raises it here.
            with contextlib.suppress(nextcord.ConnectionClosed, nextcord.PrivilegedIntentsRequired):
                await bot.task
        Route.BASE = original_base


def _recorder(events: Events, name: str) -> Callable[..., Coroutine[Any, Any, None]]:
    async def listener(*args: Any) -> None:
        events.record(name)

    return listener


async def test_nextcord_resumes_after_op_7_reconnect(
    fake: FakeDiscord, world: World, launch: Launch
) -> None:
    bot = await launch()
    [session_id] = fake.gateway.sessions

    await fake.gateway.request_reconnect()
    await bot.events.wait("resumed")

    assert [p["session_id"] for p in fake.resume_payloads] == [session_id]
    assert len(fake.identify_payloads) == 1


@pytest.mark.parametrize("resumable", [True, False])
async def test_nextcord_follows_invalid_session_d(
    fake: FakeDiscord, world: World, launch: Launch, resumable: bool
) -> None:
    bot = await launch()
    [session_id] = fake.gateway.sessions

    await fake.gateway.invalidate_sessions(resumable=resumable)

    if resumable:  # "may resume": it RESUMEs the same session
        await bot.events.wait("resumed")
        assert [p["session_id"] for p in fake.resume_payloads] == [session_id]
        assert len(fake.identify_payloads) == 1
    else:  # "must identify again": a new session, no RESUME
        await bot.events.wait("ready", 2)
        assert fake.resume_payloads == []
        assert len(fake.identify_payloads) == 2
        assert bot.client.reidentified == 1
        assert session_id not in fake.gateway.sessions


@pytest.mark.parametrize("code", sorted(CLOSE_CODES))
async def test_nextcord_after_each_close_code_of_the_docs(
    fake: FakeDiscord, world: World, launch: Launch, code: int
) -> None:
    """Resumable codes: RESUME of the same session. 4007 and 4009 ("start a new session"):
    nextcord tries to RESUME anyway, is refused (op 9 `d: false`) and IDENTIFYs anew. Codes
    the docs say not to reconnect after (4004, 4010–4014): nextcord stops."""
    bot = await launch()
    [session_id] = fake.gateway.sessions
    close = CLOSE_CODES[code]

    await fake.drop_gateway(code=code)

    if close.resumable:
        await bot.events.wait("resumed")
        assert [p["session_id"] for p in fake.resume_payloads] == [session_id]
        assert len(fake.identify_payloads) == 1
    elif close.reconnect:
        await bot.events.wait("ready", 2)
        assert [p["session_id"] for p in fake.resume_payloads] == [session_id]
        assert len(fake.identify_payloads) == 2
        assert bot.client.reidentified == 1
        assert session_id not in fake.gateway.sessions
    else:
        expected = nextcord.PrivilegedIntentsRequired if code == 4014 else nextcord.ConnectionClosed
        with pytest.raises(expected) as raised:
            async with asyncio.timeout(5):
                await bot.task
        if code != 4014:
            assert isinstance(raised.value, nextcord.ConnectionClosed)
            assert raised.value.code == code
        assert fake.resume_payloads == []
        assert len(fake.identify_payloads) == 1


# 4. the docs' tables, as transcribed ---------------------------------------------------


def _docs_table(page: str, anchor: str) -> list[tuple[str, str]] | None:
    """(name, type) cells of the table under `anchor` in a copied docs page; None when
    the anchor names a section with no table of its own (prose, as for THREAD_CREATE)."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if f'<ManualAnchor id="{anchor}"' in line
            or (line.startswith("#") and _slug(line) == anchor)
        ),
        None,
    )
    assert start is not None, f"{page}#{anchor} is not in the docs"
    if lines[start].startswith("<ManualAnchor"):
        start += 1  # the anchor's own heading ("###### Ready Event Fields")
    rows: list[tuple[str, str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("#") and not rows:
            return None
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] not in ("Field", "") and not set(cells[0]) <= {"-"}:
                rows.append((cells[0], cells[1]))
        elif rows:
            break
    return rows or None


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lstrip("#").strip().lower()).strip("-")


_SIMPLE_TYPES = {
    "snowflake": "snowflake",
    "string": "string",
    "integer": "integer",
    "int": "integer",
    "boolean": "boolean",
    "float": "number",
    "ISO8601 timestamp": "timestamp",
    "array of snowflakes": "array<snowflake>",
}


def _shared_specs() -> dict[str, dict[str, Field]]:
    """Every transcribed row read from a page copied in shared/specs, by section."""
    by_section: dict[str, dict[str, Field]] = defaultdict(dict)
    for table in TABLES.values():
        for field in table.fields.values():
            if field.spec.startswith("discord-api-docs/") and " " not in field.spec:
                by_section[field.spec].setdefault(field.name, field)
    return by_section


@pytest.mark.parametrize("section", sorted(_shared_specs()))
def test_each_table_matches_the_docs_rows(section: str) -> None:
    page, _, anchor = section.removeprefix("discord-api-docs/").partition("#")
    rows = _docs_table(page, anchor)
    fields = _shared_specs()[section]
    if rows is None:  # rows taken from the event's prose: nothing tabular to compare
        return
    documented = {}
    for cell, kind in rows:
        name = re.sub(r"\\\[\d+\\\]|\\\*|\*", "", cell).replace(" ", "")
        documented[name.rstrip("?")] = (not name.endswith("?"), kind)
    assert set(fields) == set(documented), section
    for name, field in fields.items():
        required, kind = documented[name]
        assert field.required == required, f"{section}: {name} required?"
        assert field.nullable == kind.startswith("?"), f"{section}: {name} nullable?"
        simple = _SIMPLE_TYPES.get(kind.lstrip("?"))
        if simple is not None:
            assert field.type == simple, f"{section}: {name} type"


def test_the_close_codes_are_the_docs_table() -> None:
    rows = _docs_rows_after("opcodes-and-status-codes.mdx", "###### Gateway Close Event Codes")
    documented = {int(r[0]): (r[1], r[-1] == "true") for r in rows}

    assert {c: (v.description, v.reconnect) for c, v in CLOSE_CODES.items()} == documented
    assert [c for c, v in CLOSE_CODES.items() if v.new_session] == [4007, 4009]
    for code in (4007, 4009):
        explanation = next(r[2] for r in rows if int(r[0]) == code)
        assert "Reconnect and start a new" in explanation


def _docs_rows_after(page: str, heading: str) -> list[list[str]]:
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0].isdigit():
                rows.append(cells)
        elif rows:
            break
    return rows


# 5. the checker ---------------------------------------------------------------------------


def _fields(found: list[Violation]) -> dict[str, str]:
    return {v.field: v.problem for v in found}


async def test_a_payload_made_wrong_is_reported_field_by_field(
    fake: FakeDiscord, world: World
) -> None:
    stored = await fake.post_message(world.text, world.alice, "hello")
    good = dict(stored.data, guild_id=str(world.guild.id))
    assert problems("MESSAGE_CREATE", good) == []

    bad = json.loads(json.dumps(good))
    del bad["author"]["id"]  # nested required field
    bad["channel_id"] = int(bad["channel_id"])  # a snowflake is a string
    bad["pinned"] = None  # not nullable
    bad["edited_timestamp"] = "yesterday"  # not ISO8601
    bad["gulid_id"] = bad.pop("guild_id")  # the fake's typo of a documented field
    bad["brand_new_field"] = 1  # Discord adds fields: allowed
    found = problems("MESSAGE_CREATE", bad)

    assert set(_fields(found)) == {
        "author.id",
        "channel_id",
        "pinned",
        "edited_timestamp",
        "gulid_id",
    }
    by_field = {v.field: v for v in found}
    assert "missing" in by_field["author.id"].problem
    assert "user.mdx#user-object-user-structure" in by_field["author.id"].spec
    assert "snowflake" in by_field["channel_id"].problem
    assert "not nullable" in by_field["pinned"].problem
    assert "'guild_id'" in by_field["gulid_id"].problem
    assert by_field["gulid_id"].spec == (
        "discord-api-docs/gateway-events.mdx#message-create-message-create-extra-fields"
    )
    assert {v.where for v in found} == {"GATEWAY MESSAGE_CREATE"}


def test_unions_follow_the_docs_choice() -> None:
    # GUILD_CREATE for an unavailable guild is an unavailable guild object, nothing more.
    assert problems("GUILD_CREATE", {"id": "1", "unavailable": True}) == []
    assert set(_fields(problems("GUILD_CREATE", {"id": "1"}))) >= {"name", "roles", "members"}
    # An interaction's `type` decides what its `data` is.
    command = {"id": "1", "name": "ask", "type": 1, "options": [{"name": "q", "type": 3}]}
    assert "data.custom_id" in _fields(problems("INTERACTION_CREATE", {"type": 3, "data": {}}))
    assert "data.custom_id" not in _fields(
        problems("INTERACTION_CREATE", {"type": 2, "data": command})
    )
    found = _fields(problems("INTERACTION_CREATE", {"type": 2, "data": {"options": [{}]}}))
    assert {"data.id", "data.options[0].name", "data.options[0].type"} <= set(found)


def test_an_event_without_a_table_is_not_checked() -> None:
    assert problems("SOME_FUTURE_EVENT", {"anything": None}) == []


async def test_every_event_of_a_growing_world_follows_the_docs(
    fake: FakeDiscord, world: World, http: aiohttp.ClientSession
) -> None:
    ws, frames = await identified(http, fake)
    shot = fake.add_attachment("trace.txt", b"Traceback")
    other = fake.create_guild("second guild")
    role = fake.create_role(world.guild, "Modo")
    bob = fake.create_member(world.guild, "bob", roles=[role])
    fake.create_text_channel(world.guild, "annonces")
    thread = await fake.create_forum_thread(
        world.forum, author=bob, title="Q", content="?", tags=["python"], attachments=[shot]
    )
    reply = await fake.post_message(thread, world.alice, "see <@" + str(bob.id) + ">")
    fake.message_store.edit(reply, {"content": "edited"}, [])
    fake.message_store.delete(reply)
    await fake.archive_thread(thread)
    await ws.send_json({"op": 8, "d": {"guild_id": str(world.guild.id), "query": "", "limit": 0}})
    frames += await receive_until(ws, "GUILD_MEMBERS_CHUNK")

    events = [f["t"] for f in frames]
    for name in (
        "READY",
        "GUILD_CREATE",
        "GUILD_ROLE_CREATE",
        "GUILD_MEMBER_ADD",
        "CHANNEL_CREATE",
        "THREAD_CREATE",
        "MESSAGE_CREATE",
        "MESSAGE_UPDATE",
        "MESSAGE_DELETE",
        "THREAD_UPDATE",
        "GUILD_MEMBERS_CHUNK",
    ):
        assert name in events
    assert [f["d"]["id"] for f in frames if f["t"] == "GUILD_CREATE"][-1] == str(other.id)
    for frame in frames:
        assert problems(frame["t"], frame["d"]) == [], frame["t"]
    await ws.close()
