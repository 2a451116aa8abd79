"""The gateway websocket: HELLO, IDENTIFY → READY + GUILD_CREATE, RESUME with replay.

Every dispatch is appended to its session's history with the next sequence number; a
writer task per connection sends the history in order. A RESUME points the new
connection's cursor just after the client's `seq`, which replays whatever it missed, and
`drop()` can move it further back so the client sees duplicates, as real Discord may.
Sessions last until the client closes with 1000/1001 or `expire_sessions()` expires the
ones with no live connection, as Discord does a few minutes after a connection is lost:
a RESUME of an expired session is answered op 9 INVALID_SESSION `d: false`, and what it
had not received is never sent (`hold_resumes` keeps a reconnecting client waiting, so a
test can act during the gap). A guild can be unavailable (`make_unavailable`: an outage,
or a guild that loads late): its events are not sent, a new session's READY lists it
`unavailable: true` without its GUILD_CREATE (an outage sends GUILD_DELETE instead), and
`make_available` sends its GUILD_CREATE.
Frames are plain-text JSON (the client's `compress=zlib-stream` is ignored: nextcord
only inflates binary frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from aiohttp import WSMsgType, web

from ibot.testing.fake_discord import event_check
from ibot.testing.fake_discord.constants import EVENT_INTENTS, PRIVILEGED_INTENTS, Intent, Op
from ibot.testing.fake_discord.event_fields import CLOSE_CODES

if TYPE_CHECKING:
    from ibot.testing.fake_discord.server import FakeDiscord

Json = dict[str, Any]

#: Events a replay never repeats: they belong to one connection, not to the stream.
_NOT_REPLAYED = frozenset({"READY", "RESUMED"})


@dataclass
class Frame:
    seq: int
    event: str
    data: Json

    def text(self) -> str:
        return json.dumps({"op": Op.DISPATCH, "t": self.event, "s": self.seq, "d": self.data})


@dataclass(eq=False)
class Connection:
    """One websocket; bound to a session after IDENTIFY or RESUME."""

    ws: web.WebSocketResponse
    request: web.Request
    session: GatewaySession | None = None
    cursor: int = 0  # index in session.history of the next frame to send
    backlog: list[Frame] = field(default_factory=list)  # replayed frames, sent first
    closed: bool = False
    dropped: bool = False  # closed on purpose by FakeDiscord.drop_gateway
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def pending(self) -> bool:
        session = self.session
        return bool(self.backlog) or (session is not None and self.cursor < len(session.history))


@dataclass(eq=False)
class GatewaySession:
    id: str
    intents: int
    seq: int = 0
    history: list[Frame] = field(default_factory=list)
    conn: Connection | None = None
    replay_on_resume: int = 0

    def allows(self, event: str) -> bool:
        needed = EVENT_INTENTS.get(event)
        return needed is None or bool(self.intents & needed)

    def push(self, event: str, data: Json) -> Frame:
        event_check.check(event, data)  # against the docs' field tables (tests only)
        self.seq += 1
        frame = Frame(self.seq, event, data)
        self.history.append(frame)
        return frame


class Gateway:
    """Serves /gateway for one FakeDiscord; keeps sessions alive across reconnects."""

    def __init__(self, fake: FakeDiscord, heartbeat_interval_ms: int = 41_250) -> None:
        self._fake = fake
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: list[Connection] = []
        self.identify_payloads: list[Json] = []
        self.resume_payloads: list[Json] = []
        #: The answer to each RESUME, as sent: op 9 `d: false`, or the RESUMED dispatch.
        self.resume_replies: list[Json] = []
        #: While True, a RESUME waits before it is answered (the client is still away).
        self.hold_resumes = False
        #: Unavailable guilds: id → True for an outage (a new session is sent GUILD_DELETE
        #: for it), False for a guild that loads late (nothing until it is available).
        self.unavailable_guilds: dict[int, bool] = {}

    # -- dispatching ---------------------------------------------------------------

    def dispatch(
        self, event: str, data: Json, shape: Callable[[GatewaySession], Json] | None
    ) -> None:
        """Append `event` to every session whose intents allow it (shaped per session)."""
        if self._in_unavailable_guild(data):
            return  # lost, as on Discord: the guild's GUILD_CREATE tells its state when back
        for session in self.sessions.values():
            if session.allows(event):
                session.push(event, shape(session) if shape else data)
        self._fake._signal.notify()

    def _in_unavailable_guild(self, data: Json) -> bool:
        guild_id = data.get("guild_id")
        return guild_id is not None and int(guild_id) in self.unavailable_guilds

    # -- sessions and guild availability ---------------------------------------------

    @staticmethod
    def _live(session: GatewaySession) -> bool:
        conn = session.conn
        return conn is not None and not conn.closed and not conn.dropped

    def expire_sessions(self) -> int:
        """Expire every session with no live connection (Discord keeps one a few minutes
        after its connection is lost): its RESUME is answered op 9 `d: false`, and what it
        had not received, or is dispatched from now on, never reaches it. Returns how many.
        """
        expired = [s for s in self.sessions.values() if not self._live(s)]
        for session in expired:
            del self.sessions[session.id]
        self._fake._signal.notify()
        return len(expired)

    def set_hold_resumes(self, hold: bool) -> None:
        self.hold_resumes = hold
        self._fake._signal.notify()

    def make_unavailable(self, guild_id: int, *, outage: bool) -> None:
        """The guild becomes unavailable: every session is sent GUILD_DELETE with the
        unavailable guild object, and the guild's events are lost until `make_available`.
        A session that identifies meanwhile finds it `unavailable: true` in READY, then
        gets GUILD_DELETE for it if `outage`, else nothing (the guild loads late)."""
        self.dispatch("GUILD_DELETE", {"id": str(guild_id), "unavailable": True}, None)
        self.unavailable_guilds[guild_id] = outage

    def make_available(self, guild_id: int) -> None:
        """The guild is back (or loaded): GUILD_CREATE, with `unavailable: false`."""
        self.unavailable_guilds.pop(guild_id, None)
        world = self._fake.world
        guild = world.guilds[guild_id]
        self.dispatch(
            "GUILD_CREATE", {}, lambda s: guild.create_payload(world.visible_members(guild, s))
        )

    def delivered(self) -> bool:
        """True once every live connection has written all it owes."""
        return all(c.closed or not c.pending for c in self.connections if c.session)

    async def drop(self, replay_last: int, code: int | None) -> int:
        """Close every live connection abnormally; the next RESUME replays `replay_last`."""
        live = [c for c in self.connections if not c.closed and c.session]
        for conn in live:
            assert conn.session is not None
            conn.session.replay_on_resume = replay_last
            conn.dropped = True
            if code is None:
                transport = conn.request.transport
                if transport is not None:
                    transport.abort()
            else:
                if code in CLOSE_CODES and not CLOSE_CODES[code].resumable:
                    # The docs' close codes: no RESUME after this one (op 9 answers it).
                    self.sessions.pop(conn.session.id, None)
                await conn.ws.close(code=code, message=b"dropped by FakeDiscord")
        return len(live)

    async def request_reconnect(self) -> int:
        """Send op 7 RECONNECT on every live connection, as Discord does before it moves
        a session: the client closes, reconnects and RESUMEs. Returns how many."""
        live = [c for c in self.connections if not c.closed and c.session]
        for conn in live:
            await self._send(conn, {"op": Op.RECONNECT, "d": None})
        return len(live)

    async def invalidate_sessions(self, *, resumable: bool) -> int:
        """Send op 9 INVALID_SESSION `d: resumable` on every live connection; with False
        the sessions end (a RESUME is refused: the client must IDENTIFY again)."""
        live = [c for c in self.connections if not c.closed and c.session]
        for conn in live:
            assert conn.session is not None
            if not resumable:
                self.sessions.pop(conn.session.id, None)
            await self._send(conn, {"op": Op.INVALID_SESSION, "d": resumable})
        return len(live)

    async def close_all(self) -> None:
        self.set_hold_resumes(False)  # a held RESUME must not keep its handler waiting
        for conn in list(self.connections):
            if not conn.closed:
                conn.dropped = True
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=1001, message=b"fake server stopping")

    # -- websocket handler ---------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = Connection(ws=ws, request=request)
        self.connections.append(conn)
        writer = asyncio.create_task(self._write_loop(conn))
        try:
            await self._send(
                conn, {"op": Op.HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}
            )
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_frame(conn, json.loads(msg.data))
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            conn.closed = True
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self._detach(conn)
            self._fake._signal.notify()
        return ws

    def _detach(self, conn: Connection) -> None:
        session = conn.session
        if session is None or session.conn is not conn:
            return
        session.conn = None
        # A clean close by the client ends the session, as on Discord (no RESUME after).
        if not conn.dropped and conn.ws.close_code in (1000, 1001):
            self.sessions.pop(session.id, None)

    async def _write_loop(self, conn: Connection) -> None:
        signal = self._fake._signal
        while True:
            await signal.wait_until(lambda: conn.closed or conn.pending, timeout=None)
            if conn.closed:
                return
            session = conn.session
            assert session is not None
            if conn.backlog:
                frame = conn.backlog.pop(0)
            else:
                frame = session.history[conn.cursor]
                conn.cursor += 1
            try:
                async with conn.send_lock:
                    await conn.ws.send_str(frame.text())
            except (ConnectionError, RuntimeError):
                conn.closed = True
            signal.notify()

    async def _send(self, conn: Connection, frame: Json) -> None:
        frame.setdefault("s", None)
        frame.setdefault("t", None)
        async with conn.send_lock:
            await conn.ws.send_str(json.dumps(frame))

    async def _on_frame(self, conn: Connection, frame: Json) -> None:
        op = frame.get("op")
        # The payload of IDENTIFY, RESUME and REQUEST_GUILD_MEMBERS is an object.
        data = cast(Json, frame.get("d"))
        if op == Op.HEARTBEAT:
            await self._send(conn, {"op": Op.HEARTBEAT_ACK, "d": None})
        elif op == Op.IDENTIFY:
            await self._identify(conn, data)
        elif op == Op.RESUME:
            await self._resume(conn, data)
        elif op == Op.REQUEST_GUILD_MEMBERS and conn.session is not None:
            conn.session.push("GUILD_MEMBERS_CHUNK", self._fake.world.members_chunk(data))
            self._fake._signal.notify()
        # PRESENCE_UPDATE, VOICE_STATE_UPDATE…: accepted and ignored.

    async def _identify(self, conn: Connection, data: Json) -> None:
        self.identify_payloads.append(data)
        self._fake._signal.notify()
        if not self._fake._token_ok(data.get("token")):
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS & ~self._fake.privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        session = GatewaySession(id=secrets.token_hex(16), intents=intents)
        self.sessions[session.id] = session
        self._bind(conn, session, cursor=0)
        session.push("READY", self._ready_payload(session))
        if intents & Intent.GUILDS:
            for payload in self._fake.world.guild_create_payloads(session):
                outage = self.unavailable_guilds.get(int(payload["id"]))
                if outage is None:
                    session.push("GUILD_CREATE", payload)
                elif outage:
                    session.push("GUILD_DELETE", {"id": payload["id"], "unavailable": True})
        self._fake._signal.notify()

    async def _resume(self, conn: Connection, data: Json) -> None:
        self.resume_payloads.append(data)
        self._fake._signal.notify()
        await self._fake._signal.wait_until(lambda: not self.hold_resumes, timeout=None)
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or not self._fake._token_ok(data.get("token")):
            # Expired (or never was): the client must IDENTIFY anew; the gap is lost.
            refused: Json = {"op": Op.INVALID_SESSION, "d": False}
            await self._send(conn, refused)
            self.resume_replies.append(refused)
            self._fake._signal.notify()
            return
        client_seq = int(data.get("seq") or 0)
        after = next(
            (i for i, f in enumerate(session.history) if f.seq > client_seq),
            len(session.history),
        )
        seen = [f for f in session.history[:after] if f.event not in _NOT_REPLAYED]
        replay = seen[-session.replay_on_resume :] if session.replay_on_resume else []
        session.replay_on_resume = 0
        if session.conn is not None and session.conn is not conn:
            old = session.conn
            old.dropped = True
            await old.ws.close(code=4000, message=b"session resumed elsewhere")
        self._bind(conn, session, cursor=after)
        conn.backlog = list(replay)
        resumed = session.push("RESUMED", {"_trace": ["fake-discord"]})
        self.resume_replies.append(json.loads(resumed.text()))
        self._fake._signal.notify()

    def _ready_payload(self, session: GatewaySession) -> Json:
        fake = self._fake
        user = fake.bot_user.payload()
        user.update(verified=True, mfa_enabled=False, flags=0)
        return {
            "v": 10,
            "user": user,
            "guilds": [{"id": str(g), "unavailable": True} for g in fake.guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": fake.gateway_url,
            "application": {"id": str(fake.application_id), "flags": fake._application_flags()},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "_trace": ["fake-discord"],
        }

    @staticmethod
    def _bind(conn: Connection, session: GatewaySession, cursor: int) -> None:
        conn.session = session
        conn.cursor = cursor
        session.conn = conn
