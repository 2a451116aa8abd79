"""The gateway websocket: HELLO, IDENTIFY → READY + GUILD_CREATE, RESUME with replay.

Every dispatch is appended to its session's history with the next sequence number; a
writer task per connection sends the history in order. A RESUME points the new
connection's cursor just after the client's `seq`, which replays whatever it missed, and
`drop()` can move it further back so the client sees duplicates, as real Discord may.
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

from ibot.testing.fake_discord.constants import EVENT_INTENTS, PRIVILEGED_INTENTS, Intent, Op

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

    # -- dispatching ---------------------------------------------------------------

    def dispatch(
        self, event: str, data: Json, shape: Callable[[GatewaySession], Json] | None
    ) -> None:
        """Append `event` to every session whose intents allow it (shaped per session)."""
        for session in self.sessions.values():
            if session.allows(event):
                session.push(event, shape(session) if shape else data)
        self._fake._signal.notify()

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
                await conn.ws.close(code=code, message=b"dropped by FakeDiscord")
        return len(live)

    async def close_all(self) -> None:
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
                session.push("GUILD_CREATE", payload)
        self._fake._signal.notify()

    async def _resume(self, conn: Connection, data: Json) -> None:
        self.resume_payloads.append(data)
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or not self._fake._token_ok(data.get("token")):
            await self._send(conn, {"op": Op.INVALID_SESSION, "d": False})
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
        session.push("RESUMED", {"_trace": ["fake-discord"]})
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
