"""Turn service outcomes into Discord objects: answer embeds, footers, member facts.

Shared by the cogs so every answer looks the same: title, markdown body split within
Discord's limits, and a localised footer with tokens and cost; mentions never ping.
Also how a deferred command tells only its user that something went wrong.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import nextcord
from nextcord.types.message import MessageReference as MessageReferencePayload

from ibot.domain import Backend, ErrorKind, Usage
from ibot.i18n import t
from ibot.money import format_usd
from ibot.services.attachments import AttachmentResult, AttachmentSource
from ibot.services.duplicates import AlreadySolved
from ibot.services.formatting import embed_messages
from ibot.services.knowledge import Hit
from ibot.services.outcomes import Answered, Failed
from ibot.services.permissions import MemberFacts
from ibot.services.summary import SummaryFailed

NO_MENTIONS = nextcord.AllowedMentions.none()
EMBED_COLOUR = nextcord.Colour.blurple()


class _Reference(nextcord.MessageReference):
    """A reply's message_reference with its ids as strings: nextcord sends integers, and
    Discord's API spec (MessageReferenceRequest) types them as snowflakes, strings."""

    def to_dict(self) -> MessageReferencePayload:
        payload = super().to_dict()
        for key in ("message_id", "channel_id", "guild_id"):
            if key in payload:
                payload[key] = str(payload[key])
        return payload

    to_message_reference_dict = to_dict


async def reply(
    message: nextcord.Message, content: str | None = None, **kwargs: Any
) -> nextcord.Message:
    """`message.reply(...)`, as a reply that follows Discord's API spec (`_Reference`)."""
    return await message.channel.send(content, reference=_Reference.from_message(message), **kwargs)


def cost_footer(
    usage: Usage,
    cost_micros: int | None,
    backend: Backend,
    lang: str,
    *,
    degraded_from: str | None = None,
) -> str:
    footer = t("cost_footer", lang, tokens=usage.total_tokens, cost=format_usd(cost_micros))
    if backend is Backend.LOCAL:
        footer += " | " + t("local_footer", lang)
    elif degraded_from:
        footer += " | " + t("budget.fallback_footer", lang, requested=degraded_from)
    return footer


def error_text(kind: ErrorKind, lang: str, *, budget: str = "", reset: str = "") -> str:
    """The short, localised message a user sees for a failed model call."""
    return t(f"error.{kind.value}", lang, budget=budget, reset=reset)


def discord_time(moment: datetime | None, style: str = "R") -> str:
    """A Discord timestamp (<t:UNIX:R> shows "in 4 hours" in the reader's own language)."""
    return f"<t:{int(moment.timestamp())}:{style}>" if moment is not None else ""


def budget_label(budget: str | None, lang: str) -> str:
    """ "guild_daily" -> "quotidien du serveur"; an unknown name is shown as it is."""
    if not budget:
        return ""
    try:
        return t(f"budget.{budget}", lang)
    except KeyError:
        return budget


def failure_text(outcome: Failed | SummaryFailed, lang: str) -> str:
    """`error_text` for a failed outcome; a budget refusal names the cap and its reset."""
    return error_text(
        outcome.kind,
        lang,
        budget=budget_label(outcome.budget, lang),
        reset=discord_time(outcome.resets_at),
    )


def attachment_notes(results: Sequence[AttachmentResult], lang: str, limit_bytes: int) -> str:
    """One line per attachment that was not (fully) read, to append to the answer."""
    lines = [
        "⚠️ " + t(r.problem, lang, name=r.name, limit=f"{limit_bytes // (1024 * 1024)} MB")
        for r in results
        if r.problem
    ]
    return "\n".join(lines)


def link(title: str, url: str) -> str:
    """A markdown link whose text cannot break out of its brackets."""
    text = " ".join(title.split()).replace("[", "(").replace("]", ")") or url
    return f"[{text}]({url})"


def sources_section(sources: Sequence[Hit], lang: str) -> str:
    """The solved threads an answer quoted, numbered as the model was told to cite them."""
    if not sources:
        return ""
    lines = [f"[{n}] {link(hit.title, hit.url)}" for n, hit in enumerate(sources, start=1)]
    return f"**{t('knowledge.sources_heading', lang)}**\n" + "\n".join(lines)


def answer_embeds(text: str, *, title: str, footer: str) -> list[list[nextcord.Embed]]:
    """Messages of embeds for one answer (usually one message with one embed)."""
    messages = []
    for parts in embed_messages(text, title=title, footer=footer):
        embeds = []
        for part in parts:
            embed = nextcord.Embed(
                title=part.title, description=part.description, colour=EMBED_COLOUR
            )
            if part.footer:
                embed.set_footer(text=part.footer)
            embeds.append(embed)
        messages.append(embeds)
    return messages


def answered_embeds(
    outcome: Answered, *, title: str, lang: str, limit_bytes: int
) -> list[list[nextcord.Embed]]:
    """An answer as messages of embeds: text, notes on unread files, the solved threads
    it quoted (as links), the cost footer. The short answer to a near duplicate opens
    with the thread it repeats ("Déjà résolu ici : …"), which is then its only link."""
    notes = attachment_notes(outcome.attachments, lang, limit_bytes)
    if isinstance(outcome, AlreadySolved):
        solved = t(
            "knowledge.already_solved", lang, link=link(outcome.solved.title, outcome.solved.url)
        )
        text = f"{solved}\n\n{outcome.text}" + (f"\n\n{notes}" if notes else "")
    else:
        sources = sources_section(outcome.sources, lang)
        text = outcome.text + "".join(f"\n\n{part}" for part in (notes, sources) if part)
    footer = cost_footer(
        outcome.usage,
        outcome.cost_micros,
        outcome.backend,
        lang,
        degraded_from=outcome.degraded_from,
    )
    return answer_embeds(text, title=title, footer=footer)


def invoker(interaction: nextcord.Interaction) -> nextcord.Member | nextcord.User:
    """Who ran the command. nextcord types `Interaction.user` as optional (a PING has no
    user); an application command always has one."""
    user = interaction.user
    if user is None:
        raise RuntimeError(f"interaction {interaction.id} has no user")
    return user


def member_facts(
    member: nextcord.Member | nextcord.User,
    guild: nextcord.Guild | None,
    permissions: nextcord.Permissions | None = None,
) -> MemberFacts:
    roles = [role.id for role in getattr(member, "roles", [])]
    perms = permissions or getattr(member, "guild_permissions", None)
    return MemberFacts.of(
        roles,
        administrator=bool(perms and perms.administrator),
        manage_messages=bool(perms and perms.manage_messages),
        is_owner=bool(guild and guild.owner_id == member.id),
    )


def attachment_source(attachment: nextcord.Attachment) -> AttachmentSource:
    return AttachmentSource(
        filename=attachment.filename,
        size=attachment.size,
        content_type=attachment.content_type,
        read=attachment.read,
    )


async def send_private_after_defer(
    interaction: nextcord.Interaction, content: str, *, deferred_private: bool
) -> None:
    """Send `content` to the invoking user only, after `response.defer(ephemeral=...)`.

    The first follow-up after a deferral does not create a message: it edits the loading
    one, and "The ephemeral flag will be ignored, and the value you provided in the
    initial defer response will be preserved" (Discord docs, receiving-and-responding,
    "Create Followup Message"). So after a public deferral the public "thinking…"
    message is deleted first; the follow-up is then a new message, and its ephemeral
    flag counts. After a private deferral, filling the placeholder is already private.
    """
    if not deferred_private:
        with contextlib.suppress(nextcord.NotFound):  # already gone: nothing to hide
            await interaction.delete_original_message()
    await interaction.followup.send(content, ephemeral=True, allowed_mentions=NO_MENTIONS)
