"""One run of both fakes, in-process, through every route the bot uses and every event
the fake Discord dispatches; what they answered and sent is kept for the report.

The REST part follows tests/test_openapi_check.py's tour (messages, channels and
threads, members, reactions, commands, interactions and webhooks, gateway/bot), its
success answers only, and adds what fills more of a message (a reply, an embed, an
upload, a mention). A websocket client identifies with every intent the fake knows
before the members' actions and keeps each dispatch as it came over the wire (the
session's history holds the same frames, but their dicts share lists with the stored
messages, which later changes reach); it also asks for members (op 8), and resumes on
a second connection (RESUMED). A guild outage and its return come last (GUILD_DELETE,
GUILD_CREATE), since the guild's events are lost meanwhile. The spec checks of
openapi_check.py and event_check.py run throughout; what they record is handed back
with the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ibot.testing import spec_violations
from ibot.testing.fake_discord import FakeDiscord
from ibot.testing.fake_discord.constants import Intent
from ibot.testing.fake_openai import FakeOpenAI
from ibot.testing.spec_violations import Violation

Json = Any
TOKEN = "fidelity-token"
JSON = "application/json"
_GROUP = re.compile(r"\(\?P<\w+>([^()]*)\)")
_LITERAL = re.compile(r"[@\w.-]+")


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request of the tour and what the fake answered: the JSON body, or each
    `data:` event of a stream (`bodies` is empty when the answer had no body)."""

    side: str  # "discord" | "openai"
    method: str
    path: str  # as requested, without the query string (OpenAI's with its /v1)
    status: int
    media_type: str
    bodies: tuple[Json, ...]


@dataclass
class Tour:
    """What one run of the fakes gave: the routes each serves (one sample path per
    route, its ids set to 1), the exchanges, the dispatches, the spec departures."""

    discord_routes: list[tuple[str, str]] = field(default_factory=list)
    openai_routes: list[tuple[str, str]] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    frames: list[tuple[str, Json]] = field(default_factory=list)  # (event, d), in order
    violations: list[Violation] = field(default_factory=list)


class TourError(RuntimeError):
    """A step of the tour was not answered as it expects (a fake changed)."""


def sample_paths(pattern: str) -> Iterator[str]:
    """Concrete paths a route pattern of the fake Discord serves: each id or token 1,
    and each literal alternative of a group (`@original|\\d+`) taken in turn."""
    groups = _GROUP.findall(pattern)
    choices = [
        [alt if _LITERAL.fullmatch(alt) else "1" for alt in body.split("|")] for body in groups
    ]
    for picked in itertools.product(*choices):
        parts = _GROUP.split(pattern)  # literal, group body, literal, …
        parts[1::2] = picked
        yield "".join(parts)


def discord_route_samples(fake: FakeDiscord) -> list[tuple[str, str]]:
    """(method, sample path) of every route in the fake Discord's table."""
    found: list[tuple[str, str]] = []
    for method, pattern, _handler, _auth in fake._rest.routes:
        for path in sample_paths(pattern.pattern):
            if (method, path) not in found:
                found.append((method, path))
    return found


async def run_tour() -> Tour:
    """Both fakes driven once; the spec checks on while they run (their state is put
    back after), and their departures collected in `Tour.violations`."""
    was_enabled = spec_violations.enabled()
    spec_violations.enable()
    earlier = spec_violations.drain()
    tour = Tour()
    try:
        await _tour_discord(tour)
        await _tour_openai(tour)
    finally:
        tour.violations = spec_violations.drain()
        for violation in earlier:  # not ours: left for whoever was collecting them
            spec_violations.record(violation)
        spec_violations.enable(was_enabled)
    return tour


# -- the fake Discord ------------------------------------------------------------------


class _Client:
    """The tour's REST client: each answer recorded as an Exchange."""

    def __init__(self, http: aiohttp.ClientSession, fake: FakeDiscord, tour: Tour) -> None:
        self.http, self.fake, self.tour = http, fake, tour

    async def __call__(self, status: int, method: str, path: str, **kwargs: Any) -> Json:
        async with self.http.request(method, self.fake.base_url + path, **kwargs) as response:
            raw = await response.read()
            media = response.content_type
            body = json.loads(raw) if raw and media == JSON else None
        bodies = () if body is None else (body,)
        self.tour.exchanges.append(
            Exchange("discord", method, path, response.status, media, bodies)
        )
        if response.status != status:
            raise TourError(f"{method} {path}: {response.status}, not {status}: {raw[:300]!r}")
        return body


class _Received:
    """The dispatches a client read, by sequence number, as they came over the wire."""

    def __init__(self) -> None:
        self.frames: dict[int, tuple[str, Json]] = {}
        self._changed = asyncio.Event()

    async def read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                frame = json.loads(message.data)
                if frame.get("op") == 0:
                    self.frames[int(frame["s"])] = (frame["t"], frame["d"])
                    self._changed.set()

    async def up_to(self, seq: int) -> None:
        """Until every dispatch up to `seq` was read."""
        async with asyncio.timeout(5):
            while max(self.frames, default=0) < seq:
                self._changed.clear()
                await self._changed.wait()


async def _connect(
    http: aiohttp.ClientSession, fake: FakeDiscord, frame: Json, received: _Received
) -> tuple[aiohttp.ClientWebSocketResponse, asyncio.Task[None]]:
    """A gateway connection that sent `frame` after HELLO, its dispatches read into
    `received`."""
    ws = await http.ws_connect(fake.gateway_url)
    await ws.receive_json()  # HELLO
    await ws.send_json(frame)
    return ws, asyncio.create_task(received.read(ws))


async def _tour_discord(tour: Tour) -> None:
    every_intent = 0
    for intent in Intent:
        every_intent |= int(intent)
    async with (
        FakeDiscord(token=TOKEN) as discord,
        aiohttp.ClientSession(headers={"Authorization": f"Bot {TOKEN}"}) as http,
    ):
        tour.discord_routes = discord_route_samples(discord)
        expect = _Client(http, discord, tour)
        owner = discord.create_user("owner")
        guild = discord.create_guild("g", owner=owner)
        alice = discord.create_member(guild, "alice", nick="Alice")
        text = discord.create_text_channel(guild, "general", topic="t")
        forum = discord.create_forum(guild, "aide", tags=["python", {"name": "résolu"}])
        await discord.create_forum_thread(forum, author=alice, title="Avant", content="?")

        identify = {
            "op": 2,
            "d": {
                "token": TOKEN,
                "intents": every_intent,
                "properties": {"os": "linux", "browser": "fidelity", "device": "fidelity"},
            },
        }
        received = _Received()
        ws, reader = await _connect(http, discord, identify, received)
        await discord.wait_for(lambda: discord.gateway.sessions)
        (session,) = discord.gateway.sessions.values()
        await discord.flush()

        # the world changes while the bot is connected
        role = discord.create_role(guild, "aidants", permissions=0)
        bob = discord.create_member(guild, "bob", roles=[role])
        other = discord.create_text_channel(guild, "logs")
        discord.world.set_permission_overwrite(other, role, allow=1 << 10)
        picture = discord.add_attachment("photo.png", _png())
        thread = await discord.create_forum_thread(
            forum,
            author=alice,
            title="Question",
            content="Ça plante",
            tags=["python"],
            attachments=[picture],
        )
        asked = await discord.post_message(text, bob, "Bonjour", mentions=[alice])
        await discord.react(asked, alice, "✅")
        await discord.flush()

        await _rest_tour(expect, discord, guild.id, text.id, thread.id, forum.id, asked.id)

        # an interaction, then the gateway's own answers
        await discord.invoke_slash(guild, alice, text, "ask", {"question": "?"})
        await ws.send_json({"op": 8, "d": {"guild_id": str(guild.id), "query": "", "limit": 0}})
        await discord.wait_for(
            lambda: any(f.event == "GUILD_MEMBERS_CHUNK" for f in session.history)
        )
        await discord.delete_thread(thread)
        await received.up_to(session.seq)
        resume = {"op": 6, "d": {"token": TOKEN, "session_id": session.id, "seq": session.seq}}
        ws2, reader2 = await _connect(http, discord, resume, received)
        await discord.wait_for(lambda: discord.resume_replies)
        await discord.guild_outage(guild)
        await discord.guild_back(guild)
        await received.up_to(session.seq)
        tour.frames = [received.frames[seq] for seq in sorted(received.frames)]
        for socket, task in ((ws, reader), (ws2, reader2)):
            await socket.close()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _rest_tour(
    expect: _Client, discord: FakeDiscord, gid: int, cid: int, tid: int, fid: int, asked: int
) -> None:
    app = discord.application_id
    for path in ("/users/@me", f"/users/{discord.owner_user.id}", "/gateway", "/gateway/bot"):
        await expect(200, "GET", path)
    await expect(200, "GET", "/oauth2/applications/@me")
    ask = {
        "name": "ask",
        "description": "Pose une question",
        "type": 1,
        "options": [{"type": 3, "name": "question", "description": "?", "required": True}],
    }
    menu = {"name": "Résumer", "type": 3}
    for base in (f"/applications/{app}/commands", f"/applications/{app}/guilds/{gid}/commands"):
        await expect(200, "PUT", base, json=[ask, menu])
        created = await expect(201, "POST", base, json={**ask, "name": "summary"})
        await expect(200, "POST", base, json={**ask, "name": "summary"})
        await expect(200, "GET", base)
        await expect(200, "GET", f"{base}/{created['id']}")
        await expect(200, "PATCH", f"{base}/{created['id']}", json={"description": "Résumé"})
        await expect(204, "DELETE", f"{base}/{created['id']}")

    await expect(200, "GET", f"/channels/{cid}")
    await expect(200, "GET", f"/channels/{fid}")
    await expect(200, "GET", f"/channels/{tid}")
    await expect(200, "PATCH", f"/channels/{cid}", json={"topic": "Sujet"})
    await expect(200, "PATCH", f"/channels/{tid}", json={"applied_tags": [], "archived": True})
    await expect(200, "GET", f"/channels/{fid}/threads/archived/public", params={"limit": 5})
    before = {"limit": 100, "before": "2100-01-01T00:00:00+00:00"}
    await expect(200, "GET", f"/channels/{fid}/threads/archived/public", params=before)
    await expect(200, "PATCH", f"/channels/{tid}", json={"archived": False})
    await expect(200, "GET", f"/guilds/{gid}/threads/active")
    await expect(200, "GET", f"/guilds/{gid}")
    await expect(200, "GET", f"/guilds/{gid}/channels")
    await expect(200, "GET", f"/guilds/{gid}/roles")
    for member in discord.guilds[gid].members:
        await expect(200, "GET", f"/guilds/{gid}/members/{member}")

    reply = {
        "content": "**Salut**",
        "embeds": [{"title": "iBot", "description": "Réponse", "footer": {"text": "1 token"}}],
        "allowed_mentions": {"parse": [], "users": [], "roles": [], "replied_user": False},
        "message_reference": {"message_id": str(asked), "channel_id": str(cid)},
    }
    sent = await expect(200, "POST", f"/channels/{cid}/messages", json=reply)
    form = aiohttp.FormData()
    payload = {"content": "log", "attachments": [{"id": 0, "filename": "a.txt"}]}
    form.add_field("payload_json", json.dumps(payload), content_type=JSON)
    form.add_field("files[0]", b"hello", filename="a.txt")
    await expect(200, "POST", f"/channels/{cid}/messages", data=form)
    await expect(200, "POST", f"/channels/{tid}/messages", json={"content": "Dans le fil"})
    await expect(200, "GET", f"/channels/{cid}/messages", params={"limit": 10})
    await expect(200, "GET", f"/channels/{tid}/messages", params={"limit": 10})
    await expect(200, "GET", f"/channels/{tid}/messages/{tid}")
    await expect(200, "PATCH", f"/channels/{cid}/messages/{sent['id']}", json={"content": "Édité"})
    await expect(204, "PUT", f"/channels/{cid}/messages/{sent['id']}/reactions/%E2%8F%B3/@me")
    await expect(
        200, "GET", f"/channels/{cid}/messages/{asked}/reactions/%E2%9C%85", params={"limit": 10}
    )
    await expect(200, "GET", f"/channels/{cid}/messages/{sent['id']}")
    await expect(204, "POST", f"/channels/{cid}/typing")
    await expect(204, "DELETE", f"/channels/{cid}/messages/{sent['id']}")

    # a slash command: deferred, then follow-ups; another answered at once
    guild = discord.guilds[gid]
    alice = next(m for m in guild.members.values() if m.user.username == "alice")
    channel = discord.channels[cid]
    handle = await discord.invoke_slash(guild, alice, channel, "ask", {"question": "?"})
    hook = f"/webhooks/{app}/{handle.token}"
    callback = f"/interactions/{handle.id}/{handle.token}/callback"
    await expect(204, "POST", callback, json={"type": 5, "data": {"flags": 64}})
    await expect(200, "POST", hook, params={"wait": "true"}, json={"content": "Voilà"})
    later = await expect(200, "POST", hook, params={"wait": "true"}, json={"content": "Encore"})
    await expect(200, "GET", f"{hook}/messages/@original")
    await expect(200, "PATCH", f"{hook}/messages/@original", json={"content": "Corrigé"})
    await expect(200, "GET", f"{hook}/messages/{later['id']}")
    await expect(200, "PATCH", f"{hook}/messages/{later['id']}", json={"content": "Re"})
    await expect(204, "DELETE", f"{hook}/messages/{later['id']}")
    await expect(204, "DELETE", f"{hook}/messages/@original")
    second = await discord.invoke_slash(guild, alice, channel, "ask", {"question": "!"})
    await expect(
        200,
        "POST",
        f"/interactions/{second.id}/{second.token}/callback",
        params={"with_response": "true"},
        json={"type": 4, "data": {"content": "Tout de suite", "flags": 64}},
    )


def _png() -> bytes:
    """A 1x1 PNG: an image attachment, so the fake fills its width and height."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


# -- the fake OpenAI --------------------------------------------------------------------


async def _tour_openai(tour: Tour) -> None:
    messages = [{"role": "user", "content": "Bonjour"}]
    async with FakeOpenAI() as fake, aiohttp.ClientSession() as http:
        runner = fake._runner
        assert runner is not None
        for route in runner.app.router.routes():
            resource = route.resource
            if route.method != "HEAD" and resource is not None:
                tour.openai_routes.append((route.method, resource.canonical))
        fake.set_default_answer("Bonjour, que puis-je faire pour toi aujourd'hui ?")
        chat = f"{fake.base_url}/chat/completions"
        body = {"model": "gpt-4o", "messages": messages, "max_tokens": 50}
        async with http.post(chat, json=body) as response:
            tour.exchanges.append(
                Exchange(
                    "openai",
                    "POST",
                    "/v1/chat/completions",
                    response.status,
                    response.content_type,
                    (await response.json(),),
                )
            )
        streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
        async with http.post(chat, json=streamed) as response:
            chunks = []
            async for line in response.content:
                data = line.strip().removeprefix(b"data: ")
                if data and data != line.strip() and data != b"[DONE]":
                    chunks.append(json.loads(data))
            tour.exchanges.append(
                Exchange(
                    "openai",
                    "POST",
                    "/v1/chat/completions",
                    response.status,
                    response.content_type,
                    tuple(chunks),
                )
            )
        embeddings = {
            "model": "text-embedding-3-small",
            "input": ["pip install ne marche pas", "No module named 'cv2'"],
            "dimensions": 256,
            "encoding_format": "float",
        }
        async with http.post(f"{fake.base_url}/embeddings", json=embeddings) as response:
            tour.exchanges.append(
                Exchange(
                    "openai",
                    "POST",
                    "/v1/embeddings",
                    response.status,
                    response.content_type,
                    (await response.json(),),
                )
            )
        async with http.get(f"{fake.base_url}/models") as response:
            tour.exchanges.append(
                Exchange(
                    "openai",
                    "GET",
                    "/v1/models",
                    response.status,
                    response.content_type,
                    (await response.json(),),
                )
            )
