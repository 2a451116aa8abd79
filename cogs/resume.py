"""At start, answer the /ask-gpt and /summary a dead process left deferred.

Once per process, when the bot is first ready: `ResumeService.resume` (Discord-free)
answers each held command again through the same service, gateway and ledger, and this
cog is its `ResumePort`: the /ask-gpt and /summary cogs read what Discord holds (the
image, the history) and deliver with their own rendering, through the deferred
response's webhook rebuilt from the stored token (`Deferred.rebuilt`), with a note that
the bot restarted. Nothing here can stop the start: a failure is logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from nextcord.ext import commands

from cogs._render import Deferred
from cogs.ask import AskCog
from cogs.summary import SummaryCog
from ibot.app import Services
from ibot.db.pending_interactions import PendingInteraction
from ibot.i18n import t
from ibot.services.ask import AskOutcome
from ibot.services.attachments import AttachmentSource
from ibot.services.summary import HistoryMessage, SummaryOutcome

log = structlog.get_logger("ibot.resume")


class ResumeCog(commands.Cog):
    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.service = services.resume_service()
        self.lang = services.settings.prompts.language
        self._started = False
        self.task: asyncio.Task[None] | None = None  # referenced: the loop holds it weakly

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        # on_ready comes again after a refused RESUME; the held commands are this
        # process's own by then.
        if self._started:
            return
        self._started = True
        self.task = asyncio.create_task(self._resume_logged())

    async def _resume_logged(self) -> None:
        try:
            async with self.services.in_flight.track():  # a graceful stop lets it finish
                await self.service.resume(self)
        except Exception:
            log.exception("pending_interactions_resume_failed")

    def _cog[C: commands.Cog](self, kind: type[C]) -> C:
        cog = self.bot.get_cog(kind.__name__)
        if not isinstance(cog, kind):
            raise RuntimeError(f"{kind.__name__} is not loaded")
        return cog

    def _target(self, pending: PendingInteraction) -> Deferred:
        return Deferred.rebuilt(
            self.bot._connection,
            application_id=pending.application_id,
            token=pending.token,
            private=pending.request.private,
            note=t("resume.note", self.lang),
        )

    # -- ResumePort ----------------------------------------------------------------

    def attachments(self, pending: PendingInteraction) -> Sequence[AttachmentSource]:
        return self._cog(AskCog).attachments(pending)

    async def history(self, pending: PendingInteraction) -> Sequence[HistoryMessage]:
        return await self._cog(SummaryCog).history(pending)

    async def deliver_ask(self, pending: PendingInteraction, outcome: AskOutcome) -> None:
        await self._cog(AskCog).deliver(self._target(pending), pending, outcome)

    async def deliver_summary(self, pending: PendingInteraction, outcome: SummaryOutcome) -> None:
        await self._cog(SummaryCog).deliver(self._target(pending), pending, outcome)


def setup(bot: commands.Bot, *, services: Services) -> None:
    bot.add_cog(ResumeCog(bot, services))
