"""The nextcord bot: the fewest intents, one extension per feature, services handed in.

Services (gateway, ledger, prompts…) are built once by `ibot.app.build_services` and
passed to each cog through `load_extension(name, extras=...)`, so no cog reaches for a
global and tests build the same bot against the fake servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import nextcord
import structlog
from nextcord.ext import commands

from ibot.app import Services
from ibot.config import ConfigError, Settings
from ibot.i18n import t

log = structlog.get_logger("ibot.bot")

# Discord's JSON error code for an interaction token past its 15 minutes.
INVALID_WEBHOOK_TOKEN = 50027

# iBot never joins voice: nextcord's start-up warning about PyNaCl is noise.
nextcord.VoiceClient.warn_nacl = False

EXTENSIONS = (
    "cogs.forum_autoreply",
    "cogs.ask",
    "cogs.summary",
    "cogs.resume",  # after ask and summary: it answers their commands a crash cut off
    "cogs.chat",
    "cogs.budget",
    "cogs.cost_report",
    "cogs.similar",
    "cogs.feedback",
    "cogs.knowledge_sync",
)


def bot_intents() -> nextcord.Intents:
    """Only what the features need.

    guilds: channels, threads and roles (THREAD_CREATE comes with it);
    guild_messages: MESSAGE_CREATE in the chat channel and forum threads;
    message_content (privileged, enable it in the developer portal): the text of forum
    posts and chat messages. No members intent: interactions carry the member.
    """
    intents = nextcord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = True
    return intents


class IBot(commands.Bot):
    def __init__(self, services: Services, *, guild_ready_timeout: float = 2.0) -> None:
        settings = services.settings
        super().__init__(
            intents=bot_intents(),
            activity=nextcord.Game(name=settings.discord.presence),
            default_guild_ids=list(settings.discord.guild_ids) or None,
            allowed_mentions=nextcord.AllowedMentions.none(),
            guild_ready_timeout=guild_ready_timeout,
            help_command=None,
        )
        self.services = services
        self._warned_no_message_content = False
        for name in EXTENSIONS:
            self.load_extension(name, extras={"services": services})

    async def on_connect(self) -> None:
        """Each new session (READY): check it can read messages, then nextcord's own
        on_connect (it syncs the application commands)."""
        self.warn_without_message_content()
        await super().on_connect()

    def warn_without_message_content(self) -> None:
        """One warning per process when the session cannot read messages: the Message
        Content intent is not asked for, or READY's `application.flags` show it is not
        enabled in the developer portal (neither GATEWAY_MESSAGE_CONTENT, 1 << 18, nor
        GATEWAY_MESSAGE_CONTENT_LIMITED, 1 << 19). Without it MESSAGE_CREATE and REST
        reads come with empty content and attachments: forum posts are skipped as empty.
        """
        flags = self.application_flags
        enabled = flags.gateway_message_content or flags.gateway_message_content_limited
        if (enabled and self.intents.message_content) or self._warned_no_message_content:
            return
        self._warned_no_message_content = True
        log.warning(
            "message_content_intent_missing",
            requested=self.intents.message_content,
            enabled_in_portal=enabled,
            hint="enable the Message Content intent (developer portal: Bot → Privileged "
            "Gateway Intents); without it messages arrive empty and forum posts are skipped",
        )

    async def close(self) -> None:
        """Let the answers in progress reach Discord (up to the grace time), then
        disconnect. Forum posts that arrive meanwhile are left to the next start's
        catch-up."""
        if not self.is_closed():
            in_flight = self.services.in_flight
            grace = self.services.settings.discord.shutdown_grace_s
            if len(in_flight):
                log.info("shutdown_draining", answers=len(in_flight), grace_s=grace)
            left = await in_flight.drain(grace)
            if left:
                log.warning("shutdown_cut_short", answers=left)
        await super().close()

    async def on_application_command_error(
        self, interaction: nextcord.Interaction[IBot], exception: Exception
    ) -> None:
        """The one global handler: full context in the log, a short private message to the user.

        An answer that came after the interaction's token expired (15 minutes: 401 Invalid
        Webhook Token, 50027) can no longer reach the user by any route the token opens:
        one warning, and no error message sent after it to be refused the same way.
        """
        command = interaction.application_command
        original = getattr(exception, "original", exception)
        if isinstance(original, nextcord.HTTPException) and original.code == INVALID_WEBHOOK_TOKEN:
            log.warning(
                "interaction_expired",
                command=getattr(command, "qualified_name", None),
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                user_id=interaction.user.id if interaction.user else None,
                interaction_id=interaction.id,
            )
            return
        log.error(
            "command_failed",
            command=getattr(command, "qualified_name", None),
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            user_id=interaction.user.id if interaction.user else None,
            exc_info=exception,
        )
        message = t("error.generic", self.services.settings.prompts.language)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(message, ephemeral=True)
            else:
                await interaction.response.send_message(message, ephemeral=True)
        except nextcord.HTTPException:
            log.warning("command_error_reply_failed", exc_info=True)


class CloseOnSignal:
    """The SIGINT/SIGTERM handler: the first signal starts the one graceful close; a
    signal while it runs (an impatient service manager, a second Ctrl-C) starts nothing.

    The close task is kept here: the event loop holds tasks only weakly, so a task
    nobody references can be garbage-collected in the middle of the drain.
    """

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self.task: asyncio.Task[None] | None = None

    def __call__(self) -> None:
        if self.task is not None:
            log.info("shutdown_signal_ignored", reason="already closing")
            return
        self.task = asyncio.create_task(self.bot.close())


async def run_bot(settings: Settings) -> int:
    """Run the bot until SIGINT/SIGTERM; returns the process exit code.

    Start-up problems a deployer can fix get one clear line instead of a traceback.
    """
    from ibot.app import build_services

    if settings.discord_token is None:
        raise ConfigError("discord_token", "not set: the bot needs a Discord token (BOT_TOKEN)")
    if settings.discord.api_base_url:
        nextcord.http.Route.BASE = settings.discord.api_base_url
    services = await build_services(settings)
    # Calls a previous process left in flight (crash, SIGKILL): closed before serving.
    await services.gateway.close_interrupted()
    bot = IBot(services)
    health = None
    if settings.health.enabled:
        from ibot.health import GatewayStatus, HealthServer

        health = HealthServer(
            metrics=services.metrics,
            engine=services.engine,
            gateway_status=lambda: GatewayStatus(
                connected=bot.is_ready() and not bot.is_closed(), latency_s=bot.latency
            ),
            host=settings.health.host,
            port=settings.health.port,
        )
        await health.start()
    loop = asyncio.get_running_loop()
    close_on_signal = CloseOnSignal(bot)
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(signum, close_on_signal)
    try:
        await bot.start(settings.discord_token.get_secret_value())
    except nextcord.LoginFailure:
        log.error("discord_login_failed", hint="check BOT_TOKEN")
        print("error: Discord refused the bot token (BOT_TOKEN).", file=sys.stderr)
        return 2  # a start-up failure the deployer fixes, as ibot/startup_errors.py
    except nextcord.PrivilegedIntentsRequired:
        print(
            "error: enable the Message Content intent for this bot in the Discord developer "
            "portal (Bot → Privileged Gateway Intents).",
            file=sys.stderr,
        )
        return 2
    finally:
        if close_on_signal.task is not None:  # the signal's close ends before the rest
            try:
                await close_on_signal.task
            except Exception:
                log.exception("shutdown_close_failed")
        if not bot.is_closed():
            await bot.close()
        if health is not None:
            await health.stop()
        await services.aclose()
    return 0
