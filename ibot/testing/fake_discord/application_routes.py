"""REST routes about the bot itself: its user, the gateway URL, its application, its
slash commands.

nextcord calls them at login (`/users/@me`, `/gateway/bot`,
`/oauth2/applications/@me`) and when it syncs application commands, global or per
guild. They read and change what FakeDiscord holds for the application (its owner,
its developer-portal flags, the registered commands) rather than the world of
channels and messages, so they are kept apart from the channel and message routes.
RestApi (rest.py) routes to the methods here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ibot.testing.fake_discord.command_shapes import localized_view, reshape
from ibot.testing.fake_discord.constants import (
    INVALID_FORM_BODY,
    UNKNOWN_APPLICATION_COMMAND,
    UNKNOWN_GUILD,
    UNKNOWN_USER,
)
from ibot.testing.fake_discord.model import Json
from ibot.testing.fake_discord.validation import command_errors
from ibot.testing.fake_discord.wire import ApiError, RecordedRequest, json_response, no_content

if TYPE_CHECKING:
    from ibot.testing.fake_discord.server import FakeDiscord


class ApplicationRoutes:
    """Users, gateway, application and application-command routes of one FakeDiscord."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

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
                # the rest of PrivateApplicationResponse's required fields
                "type": None,
                "flags_new": str(fake._application_flags()),
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "role_connections_verification_url": None,
                "approximate_guild_count": len(fake.guilds),
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "eligible_oauth2_scopes": [],
                "explicit_content_filter": 0,
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

    def _stored_command(
        self, body: Json, gid: str | None, cid: int | None = None, previous: Json | None = None
    ) -> Json:
        """The command Discord makes of a registration (command_shapes.py): reshaped,
        not echoed; its `version` kept when nothing changed."""
        return reshape(
            body,
            guild_id=int(gid) if gid else None,
            application_id=self.fake.application_id,
            command_id=cid or self.fake._snowflakes.next(),
            previous=previous,
            next_version=self.fake._snowflakes.next,
        )

    @staticmethod
    def _check_bodies(bodies: list[Json], *, bulk: bool) -> None:
        """Discord's 400 50035 for a command it refuses (validation.command_errors);
        a bulk overwrite's errors are keyed by the command's index."""
        errors = {str(i): e for i, body in enumerate(bodies) if (e := command_errors(body))}
        if errors:
            raise ApiError(
                400, INVALID_FORM_BODY, "Invalid Form Body", errors if bulk else errors["0"]
            )

    async def list_commands(
        self, call: RecordedRequest, app: str, gid: str | None = None
    ) -> web.Response:
        commands = self._commands(app, gid)
        if call.query.get("with_localizations") in ("true", "True", "1"):
            return json_response(commands)
        return json_response([localized_view(c) for c in commands])

    async def upsert_command(
        self, call: RecordedRequest, app: str, gid: str | None = None
    ) -> web.Response:
        """POST creates, or overwrites the command with the same name and type (200)."""
        commands = self._commands(app, gid)
        body = call.json or {}
        self._check_bodies([body], bulk=False)
        for index, old in enumerate(commands):
            if old["name"] == body.get("name") and old["type"] == body.get("type", 1):
                commands[index] = self._stored_command(body, gid, int(old["id"]), old)
                return json_response(commands[index])
        commands.append(self._stored_command(body, gid))
        return json_response(commands[-1], 201)

    async def overwrite_commands(
        self, call: RecordedRequest, app: str, gid: str | None = None
    ) -> web.Response:
        commands = self._commands(app, gid)
        self._check_bodies(list(call.json or []), bulk=True)
        old = {(c["name"], c["type"]): c for c in commands}
        new = []
        for body in call.json or []:
            previous = old.get((body.get("name"), body.get("type", 1)))
            old_id = int(previous["id"]) if previous else None
            new.append(self._stored_command(body, gid, old_id, previous))
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
        self._check_bodies([merged], bulk=False)
        commands[index] = self._stored_command(merged, gid, int(cmd), commands[index])
        return json_response(commands[index])

    async def delete_command(
        self, call: RecordedRequest, app: str, cmd: str, gid: str | None = None
    ) -> web.Response:
        commands, index = self._find_command(app, gid, cmd)
        del commands[index]
        return no_content()
