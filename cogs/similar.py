"""/similar: anyone looks up the server's solved threads like a query (no model call)."""

from __future__ import annotations

from typing import assert_never

import nextcord
from nextcord import SlashOption
from nextcord.ext import commands

from cogs._render import NO_MENTIONS, link
from ibot.app import Services
from ibot.i18n import t
from ibot.services.similar import (
    BadQuery,
    KnowledgeOff,
    NothingSimilar,
    SimilarFound,
    SimilarOutcome,
)

MAX_SHOWN_CHARS = 100  # of the query in the heading, and of each title


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 1] + "…"


def similar_text(query: str, outcome: SimilarOutcome, lang: str) -> str:
    match outcome:
        case SimilarFound():
            lines = [t("similar.heading", lang, query=_short(query))]
            for number, hit in enumerate(outcome.hits, start=1):
                lines.append(
                    t(
                        "similar.line",
                        lang,
                        number=number,
                        link=link(_short(hit.title), hit.url),
                        score=f"{hit.score:.2f}",
                    )
                )
            return "\n".join(lines)
        case NothingSimilar():
            return t("similar.none", lang)
        case KnowledgeOff():
            return t("similar.off", lang)
        case BadQuery():
            return t("similar.bad_query", lang)
        case _:
            assert_never(outcome)


class SimilarCog(commands.Cog):
    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.service = services.similar_service()
        self.lang = services.settings.prompts.language

    @nextcord.slash_command(
        name="similar",
        description="Find solved threads similar to your problem.",
        description_localizations={
            nextcord.Locale.fr: "Trouve des discussions résolues proches de ton problème."
        },
        contexts=[nextcord.InteractionContextType.guild],
    )
    async def similar(
        self,
        interaction: nextcord.Interaction,
        query: str = SlashOption(
            description="A few words about the problem.",
            description_localizations={nextcord.Locale.fr: "Quelques mots sur le problème."},
            max_length=500,
        ),
    ) -> None:
        outcome = await self.service.similar(query, guild_id=interaction.guild_id)
        await interaction.response.send_message(
            similar_text(query, outcome, self.lang), ephemeral=True, allowed_mentions=NO_MENTIONS
        )


def setup(bot: commands.Bot, *, services: Services) -> None:
    bot.add_cog(SimilarCog(bot, services))
