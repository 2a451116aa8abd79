"""REST routes under /api/v10, with Discord's validation and error bodies.

One catch-all aiohttp handler records the request, applies armed faults, checks the
bot token, then routes with a small regex table; anything unmatched is a JSON 404 kept
in `FakeDiscord.unknown_routes`, so a route the bot needs and the fake lacks shows up.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from ibot.testing.fake_discord.constants import (
    CANNOT_EDIT_OTHERS_MESSAGE,
    CANNOT_SEND_EMPTY_MESSAGE,
    INTERACTION_ALREADY_ACKNOWLEDGED,
    INVALID_FORM_BODY,
    MAX_AUTHOR_NAME,
    MAX_CONTENT,
    MAX_EMBED_DESCRIPTION,
    MAX_EMBED_FIELDS,
    MAX_EMBED_TITLE,
    MAX_EMBED_TOTAL,
    MAX_EMBEDS,
    MAX_FIELD_NAME,
    MAX_FIELD_VALUE,
    MAX_FILES,
    MAX_FOOTER_TEXT,
    MAX_UPLOAD_BYTES,
    REQUEST_ENTITY_TOO_LARGE,
    UNKNOWN_APPLICATION_COMMAND,
    UNKNOWN_CHANNEL,
    UNKNOWN_GUILD,
    UNKNOWN_INTERACTION,
    UNKNOWN_MEMBER,
    UNKNOWN_MESSAGE,
    UNKNOWN_USER,
    UNKNOWN_WEBHOOK,
    ChannelType,
    InteractionCallback,
    MessageFlag,
)
from ibot.testing.fake_discord.faults import error_response, json_response
from ibot.testing.fake_discord.interactions import InteractionHandle
from ibot.testing.fake_discord.model import FakeChannel, StoredAttachment, StoredMessage

if TYPE_CHECKING:
    from ibot.testing.fake_discord.server import FakeDiscord

Json = dict[str, Any]


@dataclass(eq=False)
class Upload:
    """One file part of a multipart request (`files[n]`)."""

    field: str
    filename: str
    data: bytes

    @property
    def index(self) -> int | None:
        match = re.fullmatch(r"files\[(\d+)\]", self.field)
        return int(match.group(1)) if match else None


@dataclass(eq=False)
class RecordedRequest:
    """A REST request as the fake received it, and what it answered.

    `json` is the JSON body, or `payload_json` of a multipart body; `fault` names the
    injected fault that answered it, if any.
    """

    method: str
    path: str  # after /api/v10, without the query string
    query: dict[str, str]
    json: Any
    files: list[Upload] = field(default_factory=list)
    status: int | None = None
    fault: str | None = None
    at: float = field(default_factory=time.monotonic)

    def __repr__(self) -> str:
        fault = f" {self.fault}" if self.fault else ""
        return f"<{self.method} {self.path} → {self.status}{fault}>"


class ApiError(Exception):
    """Raised by route handlers; rendered as Discord's JSON error body."""

    def __init__(self, status: int, code: int, message: str, errors: object = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


Handler = Callable[..., Awaitable[web.Response]]
_ID = r"(?P<{}>\d+)"


def _p(template: str) -> re.Pattern[str]:
    """'/channels/{cid}/messages' → a regex with a named group per id."""
    return re.compile(re.sub(r"\{(\w+)\}", lambda m: _ID.format(m.group(1)), template))


class RestApi:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        w = r"(?P<token>[^/]+)"
        app_cmds = "/applications/{app}/commands"
        guild_cmds = "/applications/{app}/guilds/{gid}/commands"
        self.routes: list[tuple[str, re.Pattern[str], Handler, bool]] = [
            ("GET", _p("/users/@me"), self.get_me, True),
            ("GET", _p("/users/{uid}"), self.get_user, True),
            ("GET", _p("/gateway"), self.get_gateway, False),
            ("GET", _p("/gateway/bot"), self.get_gateway_bot, True),
            ("GET", _p("/oauth2/applications/@me"), self.get_application, True),
            ("GET", _p(app_cmds), self.list_commands, True),
            ("POST", _p(app_cmds), self.upsert_command, True),
            ("PUT", _p(app_cmds), self.overwrite_commands, True),
            ("GET", _p(app_cmds + "/{cmd}"), self.get_command, True),
            ("PATCH", _p(app_cmds + "/{cmd}"), self.edit_command, True),
            ("DELETE", _p(app_cmds + "/{cmd}"), self.delete_command, True),
            ("GET", _p(guild_cmds), self.list_commands, True),
            ("POST", _p(guild_cmds), self.upsert_command, True),
            ("PUT", _p(guild_cmds), self.overwrite_commands, True),
            ("GET", _p(guild_cmds + "/{cmd}"), self.get_command, True),
            ("PATCH", _p(guild_cmds + "/{cmd}"), self.edit_command, True),
            ("DELETE", _p(guild_cmds + "/{cmd}"), self.delete_command, True),
            ("GET", _p("/channels/{cid}"), self.get_channel, True),
            ("PATCH", _p("/channels/{cid}"), self.edit_channel, True),
            ("GET", _p("/channels/{cid}/messages"), self.get_history, True),
            ("POST", _p("/channels/{cid}/messages"), self.create_message, True),
            ("GET", _p("/channels/{cid}/messages/{mid}"), self.get_message, True),
            ("PATCH", _p("/channels/{cid}/messages/{mid}"), self.edit_message, True),
            ("DELETE", _p("/channels/{cid}/messages/{mid}"), self.delete_message, True),
            (
                "PUT",
                re.compile(
                    r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)/reactions/(?P<emoji>[^/]+)/@me"
                ),
                self.add_reaction,
                True,
            ),
            ("POST", _p("/channels/{cid}/typing"), self.typing, True),
            ("GET", _p("/channels/{cid}/threads/archived/public"), self.archived_threads, True),
            ("GET", _p("/guilds/{gid}"), self.get_guild, True),
            ("GET", _p("/guilds/{gid}/channels"), self.get_guild_channels, True),
            ("GET", _p("/guilds/{gid}/roles"), self.get_roles, True),
            ("GET", _p("/guilds/{gid}/members/{uid}"), self.get_member, True),
            ("GET", _p("/guilds/{gid}/threads/active"), self.active_threads, True),
            ("POST", re.compile(rf"/interactions/(?P<iid>\d+)/{w}/callback"), self.callback, False),
            ("POST", re.compile(rf"/webhooks/(?P<app>\d+)/{w}"), self.followup, False),
            (
                "GET",
                re.compile(rf"/webhooks/(?P<app>\d+)/{w}/messages/(?P<mid>@original|\d+)"),
                self.get_webhook_message,
                False,
            ),
            (
                "PATCH",
                re.compile(rf"/webhooks/(?P<app>\d+)/{w}/messages/(?P<mid>@original|\d+)"),
                self.edit_webhook_message,
                False,
            ),
            (
                "DELETE",
                re.compile(rf"/webhooks/(?P<app>\d+)/{w}/messages/(?P<mid>@original|\d+)"),
                self.delete_webhook_message,
                False,
            ),
        ]

    # -- plumbing ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        fake = self.fake
        path = "/" + request.match_info["tail"]
        body, uploads = await _read_body(request)
        call = RecordedRequest(request.method, path, dict(request.query), body, uploads)
        fake.requests.append(call)
        try:
            response = await self._answer(request, call)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.errors)
        call.status = response.status
        fake._signal.notify()
        return response

    async def _answer(self, request: web.Request, call: RecordedRequest) -> web.Response:
        faulted = self.fake.faults.take(call.method, call.path)
        if faulted is not None:
            fault, response = faulted
            call.fault = fault.kind
            return response
        for method, pattern, handler, needs_auth in self.routes:
            match = pattern.fullmatch(call.path)
            if match is None or method != call.method:
                continue
            if needs_auth and not self.fake._token_ok(_bot_token(request)):
                return error_response(401, 0, "401: Unauthorized")
            return await handler(call, **match.groupdict())
        self.fake.unknown_routes.append(call)
        return error_response(404, 0, "404: Not Found")

    # -- users, gateway, application ---------------------------------------------

    async def get_me(self, call: RecordedRequest) -> web.Response:
        me = self.fake.bot_user.payload()
        me.update(verified=True, mfa_enabled=False, flags=0, locale="fr", email=None)
        return json_response(me)

    async def get_user(self, call: RecordedRequest, uid: str) -> web.Response:
        user = self.fake.users.get(int(uid))
        if user is None:
            raise ApiError(404, UNKNOWN_USER, "Unknown User")
        return json_response(user.payload())

    async def get_gateway(self, call: RecordedRequest) -> web.Response:
        return json_response({"url": self.fake.gateway_url})

    async def get_gateway_bot(self, call: RecordedRequest) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return json_response(
            {"url": self.fake.gateway_url, "shards": 1, "session_start_limit": limit}
        )

    async def get_application(self, call: RecordedRequest) -> web.Response:
        fake = self.fake
        return json_response(
            {
                "id": str(fake.application_id),
                "name": fake.bot_user.username,
                "icon": None,
                "description": "",
                "rpc_origins": [],
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": fake.owner_user.payload(),
                "team": None,
                "verify_key": "0" * 64,
                "flags": fake._application_flags(),
                "summary": "",
                "bot": fake.bot_user.payload(),
            }
        )

    # -- application commands -----------------------------------------------------

    def _commands(self, app: str, gid: str | None) -> list[Json]:
        if int(app) != self.fake.application_id:
            raise ApiError(403, 50001, "Missing Access")
        key = int(gid) if gid else None
        if key is not None and key not in self.fake.guilds:
            raise ApiError(404, UNKNOWN_GUILD, "Unknown Guild")
        return self.fake._commands.setdefault(key, [])

    def _stored_command(self, body: Json, gid: str | None, cid: int | None = None) -> Json:
        command = dict(body)
        command.setdefault("type", 1)
        command.update(
            id=str(cid or self.fake._snowflakes.next()),
            application_id=str(self.fake.application_id),
            version=str(self.fake._snowflakes.next()),
        )
        if gid:
            command["guild_id"] = str(gid)
        return command

    async def list_commands(
        self, call: RecordedRequest, app: str, gid: str | None = None
    ) -> web.Response:
        return json_response(self._commands(app, gid))

    async def upsert_command(
        self, call: RecordedRequest, app: str, gid: str | None = None
    ) -> web.Response:
        """POST creates, or overwrites the command with the same name and type (200)."""
        commands = self._commands(app, gid)
        body = call.json or {}
        for index, old in enumerate(commands):
            if old["name"] == body.get("name") and old["type"] == body.get("type", 1):
                commands[index] = self._stored_command(body, gid, int(old["id"]))
                return json_response(commands[index])
        commands.append(self._stored_command(body, gid))
        return json_response(commands[-1], 201)

    async def overwrite_commands(
        self, call: RecordedRequest, app: str, gid: str | None = None
    ) -> web.Response:
        commands = self._commands(app, gid)
        old_ids = {(c["name"], c["type"]): int(c["id"]) for c in commands}
        new = []
        for body in call.json or []:
            old_id = old_ids.get((body.get("name"), body.get("type", 1)))
            new.append(self._stored_command(body, gid, old_id))
        commands[:] = new
        return json_response(new)

    def _find_command(self, app: str, gid: str | None, cmd: str) -> tuple[list[Json], int]:
        commands = self._commands(app, gid)
        for index, command in enumerate(commands):
            if command["id"] == cmd:
                return commands, index
        raise ApiError(404, UNKNOWN_APPLICATION_COMMAND, "Unknown application command")

    async def get_command(
        self, call: RecordedRequest, app: str, cmd: str, gid: str | None = None
    ) -> web.Response:
        commands, index = self._find_command(app, gid, cmd)
        return json_response(commands[index])

    async def edit_command(
        self, call: RecordedRequest, app: str, cmd: str, gid: str | None = None
    ) -> web.Response:
        commands, index = self._find_command(app, gid, cmd)
        merged = {**commands[index], **(call.json or {})}
        commands[index] = self._stored_command(merged, gid, int(cmd))
        return json_response(commands[index])

    async def delete_command(
        self, call: RecordedRequest, app: str, cmd: str, gid: str | None = None
    ) -> web.Response:
        commands, index = self._find_command(app, gid, cmd)
        del commands[index]
        return web.Response(status=204)

    # -- channels, guilds, threads ------------------------------------------------

    def _channel(self, cid: str | int) -> FakeChannel:
        channel = self.fake.channels.get(int(cid))
        if channel is None:
            raise ApiError(404, UNKNOWN_CHANNEL, "Unknown Channel")
        return channel

    def _guild(self, gid: str):
        guild = self.fake.guilds.get(int(gid))
        if guild is None:
            raise ApiError(404, UNKNOWN_GUILD, "Unknown Guild")
        return guild

    async def get_channel(self, call: RecordedRequest, cid: str) -> web.Response:
        return json_response(self._channel(cid).payload())

    async def edit_channel(self, call: RecordedRequest, cid: str) -> web.Response:
        """Renames; for threads also archived, locked and applied_tags (THREAD_UPDATE)."""
        channel = self._channel(cid)
        body = call.json or {}
        if "name" in body:
            channel.name = body["name"]
        if channel.is_thread:
            if "applied_tags" in body:
                channel.applied_tags = [int(t) for t in body["applied_tags"]]
            for key in ("archived", "locked"):
                if key in body:
                    setattr(channel, key, bool(body[key]))
        elif "topic" in body:
            channel.topic = body["topic"]
        event = "THREAD_UPDATE" if channel.is_thread else "CHANNEL_UPDATE"
        self.fake.gateway.dispatch(event, channel.payload(), None)
        return json_response(channel.payload())

    async def get_guild(self, call: RecordedRequest, gid: str) -> web.Response:
        guild = self._guild(gid)
        payload = guild.create_payload([])
        for key in ("members", "channels", "threads", "presences", "voice_states"):
            payload.pop(key)
        return json_response(payload)

    async def get_guild_channels(self, call: RecordedRequest, gid: str) -> web.Response:
        guild = self._guild(gid)
        return json_response([c.payload() for c in guild.channels.values() if not c.is_thread])

    async def get_roles(self, call: RecordedRequest, gid: str) -> web.Response:
        return json_response([r.payload() for r in self._guild(gid).roles.values()])

    async def get_member(self, call: RecordedRequest, gid: str, uid: str) -> web.Response:
        member = self._guild(gid).members.get(int(uid))
        if member is None:
            raise ApiError(404, UNKNOWN_MEMBER, "Unknown Member")
        return json_response(member.payload())

    async def active_threads(self, call: RecordedRequest, gid: str) -> web.Response:
        guild = self._guild(gid)
        threads = [c.payload() for c in guild.channels.values() if c.is_thread and not c.archived]
        return json_response({"threads": threads, "members": []})

    async def archived_threads(self, call: RecordedRequest, cid: str) -> web.Response:
        parent = self._channel(cid)
        threads = [
            t
            for t in self.fake.channels.values()
            if t.is_thread and t.parent_id == parent.id and t.archived
        ]
        threads.sort(key=lambda t: t.archive_timestamp, reverse=True)
        limit = int(call.query.get("limit", 50))
        return json_response(
            {
                "threads": [t.payload() for t in threads[:limit]],
                "members": [],
                "has_more": len(threads) > limit,
            }
        )

    # -- messages -------------------------------------------------------------------

    async def create_message(self, call: RecordedRequest, cid: str) -> web.Response:
        channel = self._channel(cid)
        if channel.type == ChannelType.GUILD_FORUM:
            raise ApiError(400, 50008, "Cannot send messages in a non-text channel")
        body = call.json or {}
        files = self._store_uploads(call, body)
        _validate_message(body, files, creating=True)
        stored = self.fake.message_store.create(
            channel,
            self.fake.bot_user,
            content=body.get("content") or "",
            embeds=body.get("embeds") or [],
            files=files,
            allowed_mentions=body.get("allowed_mentions"),
            flags=int(body.get("flags") or 0),
            request=body,
            reply_to=(body.get("message_reference") or {}).get("message_id"),
            nonce=body.get("nonce"),
        )
        self.fake.message_store.dispatch("MESSAGE_CREATE", stored)
        return json_response(stored.data)

    def _message(self, cid: str, mid: str) -> StoredMessage:
        channel = self._channel(cid)
        stored = self.fake.message_store.find(int(mid))
        if stored is None or stored.deleted or stored.channel_id != channel.id or stored.ephemeral:
            raise ApiError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return stored

    async def get_message(self, call: RecordedRequest, cid: str, mid: str) -> web.Response:
        return json_response(self.fake.message_store.rest_view(self._message(cid, mid)))

    async def get_history(self, call: RecordedRequest, cid: str) -> web.Response:
        """Newest first; `after` takes the oldest messages past the cursor, as Discord does."""
        channel = self._channel(cid)
        visible = self.fake.history(channel)  # oldest first
        limit = int(call.query.get("limit", 50))
        if not 1 <= limit <= 100:
            raise ApiError(400, INVALID_FORM_BODY, "Invalid Form Body", {"limit": "1..100"})
        q = call.query
        if "around" in q:
            pivot, half = int(q["around"]), limit // 2
            older = [m for m in visible if m.id < pivot][-half:] if half else []
            chosen = older + [m for m in visible if m.id >= pivot][: limit - len(older)]
        elif "before" in q:
            chosen = [m for m in visible if m.id < int(q["before"])][-limit:]
        elif "after" in q:
            chosen = [m for m in visible if m.id > int(q["after"])][:limit]
        else:
            chosen = visible[-limit:]
        return json_response([self.fake.message_store.rest_view(m) for m in reversed(chosen)])

    async def edit_message(self, call: RecordedRequest, cid: str, mid: str) -> web.Response:
        stored = self._message(cid, mid)
        if stored.author_id != self.fake.bot_user.id:
            raise ApiError(
                403, CANNOT_EDIT_OTHERS_MESSAGE, "Cannot edit a message authored by another user"
            )
        self._apply_edit(stored, call)
        return json_response(stored.data)

    def _apply_edit(self, stored: StoredMessage, call: RecordedRequest) -> None:
        body = dict(call.json or {})
        files = self._store_uploads(call, body)
        _validate_message(body, files, creating=False)
        self.fake.message_store.edit(stored, body, files)

    async def delete_message(self, call: RecordedRequest, cid: str, mid: str) -> web.Response:
        self.fake.message_store.delete(self._message(cid, mid))
        return web.Response(status=204)

    async def add_reaction(self, call: RecordedRequest, cid: str, mid: str, emoji: str):
        stored = self._message(cid, mid)
        name = unquote(emoji)
        reactions = stored.data.setdefault("reactions", [])
        for reaction in reactions:
            if reaction["emoji"]["name"] == name:
                if not reaction["me"]:
                    reaction.update(me=True, count=reaction["count"] + 1)
                break
        else:
            reactions.append({"emoji": {"id": None, "name": name}, "count": 1, "me": True})
        return web.Response(status=204)

    async def typing(self, call: RecordedRequest, cid: str) -> web.Response:
        self._channel(cid)
        return web.Response(status=204)

    def _store_uploads(self, call: RecordedRequest, body: Json) -> list[StoredAttachment]:
        """Turn `files[n]` parts into served attachments, named per body.attachments[n]."""
        described = {
            int(a["id"]): a
            for a in body.get("attachments") or []
            if isinstance(a, dict) and str(a.get("id", "")).isdigit() and int(a["id"]) < 100
        }
        if len(call.files) > MAX_FILES:
            raise ApiError(400, INVALID_FORM_BODY, "Invalid Form Body", {"files": "max 10"})
        if sum(len(u.data) for u in call.files) > MAX_UPLOAD_BYTES:
            raise ApiError(413, REQUEST_ENTITY_TOO_LARGE, "Request entity too large")
        stored = []
        for upload in call.files:
            meta = described.get(upload.index if upload.index is not None else -1, {})
            filename = meta.get("filename") or upload.filename
            att = self.fake.add_attachment(filename, upload.data)
            att.description = meta.get("description")
            stored.append(att)
        return stored

    # -- interactions -------------------------------------------------------------

    def _by_token(self, app: str, token: str) -> InteractionHandle:
        handle = self.fake._interactions_by_token.get(token)
        if handle is None or int(app) != self.fake.application_id:
            raise ApiError(404, UNKNOWN_WEBHOOK, "Unknown Webhook")
        return handle

    async def callback(self, call: RecordedRequest, iid: str, token: str) -> web.Response:
        fake = self.fake
        handle = fake._interactions_by_id.get(int(iid))
        if handle is None or handle.token != token:
            raise ApiError(404, UNKNOWN_INTERACTION, "Unknown interaction")
        if time.monotonic() - handle.created_at > fake.ack_window_s:
            handle.rejected.append(("callback", UNKNOWN_INTERACTION))
            raise ApiError(404, UNKNOWN_INTERACTION, "Unknown interaction")
        if handle.callbacks:
            handle.rejected.append(("callback", INTERACTION_ALREADY_ACKNOWLEDGED))
            raise ApiError(
                400, INTERACTION_ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged."
            )
        body = dict(call.json or {})
        data = dict(body.get("data") or {})
        kind = body.get("type")
        if kind == InteractionCallback.CHANNEL_MESSAGE_WITH_SOURCE:
            files = self._store_uploads(call, data)
            _validate_message(data, files, creating=True)
            handle.original = fake.message_store.create_for_interaction(
                handle, data, files, original=True
            )
        elif kind == InteractionCallback.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE:
            flags = MessageFlag.LOADING | (int(data.get("flags") or 0) & MessageFlag.EPHEMERAL)
            handle.original = fake.message_store.create_for_interaction(
                handle, {"flags": flags}, [], original=True
            )
        handle.callbacks.append(body)
        if call.query.get("with_response") in ("true", "1"):
            resource: Json = {"type": kind}
            if handle.original is not None:
                resource["message"] = handle.original.data
            return json_response({"interaction": {"id": iid, "type": 2}, "resource": resource})
        return web.Response(status=204)

    async def followup(self, call: RecordedRequest, app: str, token: str) -> web.Response:
        fake = self.fake
        handle = self._by_token(app, token)
        if not handle.acknowledged:
            handle.rejected.append(("followup", UNKNOWN_WEBHOOK))
            raise ApiError(404, UNKNOWN_WEBHOOK, "Unknown Webhook")
        body = dict(call.json or {})
        files = self._store_uploads(call, body)
        _validate_message(body, files, creating=True)
        original = handle.original
        if (
            original is not None
            and original.loading
            and not original.deleted
            and not handle.followups
        ):
            # The first follow-up after a deferral fills the "thinking…" message and
            # keeps its ephemerality (the flags asked for here are ignored): "The
            # ephemeral flag will be ignored, and the value you provided in the initial
            # defer response will be preserved, as an existing message's ephemeral state
            # cannot be changed" (receiving-and-responding.mdx, Create Followup Message).
            # A deleted placeholder no longer exists and cannot be edited: the follow-up
            # is then a new message with the flags it asks for.
            body["flags"] = original.flags & MessageFlag.EPHEMERAL
            fake.message_store.edit(original, body, files, replace_attachments=True)
            stored = original
        else:
            stored = fake.message_store.create_for_interaction(handle, body, files, original=False)
        handle.followups.append(stored)
        if call.query.get("wait") in ("1", "true", "True"):
            return json_response(stored.data)
        return web.Response(status=204)

    def _webhook_message(self, handle: InteractionHandle, mid: str) -> StoredMessage:
        if mid == "@original":
            stored = handle.original
        else:
            stored = next((m for m in handle.messages if m.id == int(mid)), None)
        if stored is None or stored.deleted:
            raise ApiError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return stored

    async def get_webhook_message(
        self, call: RecordedRequest, app: str, token: str, mid: str
    ) -> web.Response:
        handle = self._by_token(app, token)
        return json_response(self._webhook_message(handle, mid).data)

    async def edit_webhook_message(
        self, call: RecordedRequest, app: str, token: str, mid: str
    ) -> web.Response:
        handle = self._by_token(app, token)
        stored = self._webhook_message(handle, mid)
        self._apply_edit(stored, call)
        return json_response(stored.data)

    async def delete_webhook_message(
        self, call: RecordedRequest, app: str, token: str, mid: str
    ) -> web.Response:
        handle = self._by_token(app, token)
        self.fake.message_store.delete(self._webhook_message(handle, mid))
        return web.Response(status=204)


async def _read_body(request: web.Request) -> tuple[Any, list[Upload]]:
    if request.content_type.startswith("multipart/"):
        payload: Any = None
        uploads: list[Upload] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.name == "payload_json":
                payload = json.loads(await part.text())
            elif getattr(part, "filename", None):
                uploads.append(Upload(part.name or "", part.filename, bytes(await part.read())))
        return payload, uploads
    raw = await request.read()
    if not raw:
        return None, []
    try:
        return json.loads(raw), []
    except ValueError:
        return raw.decode(errors="replace"), []


def _bot_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bot ") if header.startswith("Bot ") else None


def _too_long(value: object, limit: int) -> bool:
    return isinstance(value, str) and len(value) > limit


def _validate_message(body: Json, files: list[StoredAttachment], *, creating: bool) -> None:
    """Discord's 400s for message bodies: length limits and empty messages."""
    errors: Json = {}
    content = body.get("content")
    if _too_long(content, MAX_CONTENT):
        errors["content"] = _form_error(f"Must be {MAX_CONTENT} or fewer in length.")
    embeds = body.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        errors["embeds"] = _form_error(f"Must be {MAX_EMBEDS} or fewer in length.")
    total = 0
    for index, embed in enumerate(embeds):
        problems = _embed_problems(embed)
        total += _embed_size(embed)
        if problems:
            errors.setdefault("embeds", {})[str(index)] = problems
    if total > MAX_EMBED_TOTAL:
        errors.setdefault("embeds", {})["_errors"] = [
            {
                "code": "MAX_EMBED_SIZE_EXCEEDED",
                "message": "Embed size exceeds maximum size of 6000",
            }
        ]
    if errors:
        raise ApiError(400, INVALID_FORM_BODY, "Invalid Form Body", errors)
    if creating and not (
        content
        or embeds
        or files
        or body.get("sticker_ids")
        or body.get("components")
        or body.get("poll")
    ):
        raise ApiError(400, CANNOT_SEND_EMPTY_MESSAGE, "Cannot send an empty message")


def _form_error(message: str) -> Json:
    return {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": message}]}


def _embed_problems(embed: Json) -> Json:
    problems: Json = {}
    limits = {"title": MAX_EMBED_TITLE, "description": MAX_EMBED_DESCRIPTION}
    for key, limit in limits.items():
        if _too_long(embed.get(key), limit):
            problems[key] = _form_error(f"Must be {limit} or fewer in length.")
    if _too_long((embed.get("footer") or {}).get("text"), MAX_FOOTER_TEXT):
        problems["footer"] = {"text": _form_error(f"Must be {MAX_FOOTER_TEXT} or fewer in length.")}
    if _too_long((embed.get("author") or {}).get("name"), MAX_AUTHOR_NAME):
        problems["author"] = {"name": _form_error(f"Must be {MAX_AUTHOR_NAME} or fewer in length.")}
    fields = embed.get("fields") or []
    if len(fields) > MAX_EMBED_FIELDS:
        problems["fields"] = _form_error(f"Must be {MAX_EMBED_FIELDS} or fewer in length.")
    for index, item in enumerate(fields):
        if _too_long(item.get("name"), MAX_FIELD_NAME) or _too_long(
            item.get("value"), MAX_FIELD_VALUE
        ):
            problems.setdefault("fields", {})[str(index)] = _form_error(
                f"name ≤ {MAX_FIELD_NAME}, value ≤ {MAX_FIELD_VALUE}"
            )
    return problems


def _embed_size(embed: Json) -> int:
    """Characters Discord counts toward the 6000 total of a message's embeds."""
    size = len(embed.get("title") or "") + len(embed.get("description") or "")
    size += len((embed.get("footer") or {}).get("text") or "")
    size += len((embed.get("author") or {}).get("name") or "")
    for item in embed.get("fields") or []:
        size += len(item.get("name") or "") + len(item.get("value") or "")
    return size
