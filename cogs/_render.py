"""Turn service outcomes into Discord objects: answer embeds, footers, member facts.

Shared by the cogs so every answer looks the same: title, markdown body split within
Discord's limits, and a localised footer with tokens and cost; mentions never ping.
"""

from __future__ import annotations

from collections.abc import Sequence

import nextcord

from ibot.i18n import t
from ibot.llm.types import Backend, ErrorKind, Usage
from ibot.pricing import format_usd
from ibot.services.attachments import AttachmentResult, AttachmentSource
from ibot.services.formatting import embed_messages
from ibot.services.permissions import MemberFacts

NO_MENTIONS = nextcord.AllowedMentions.none()
EMBED_COLOUR = nextcord.Colour.blurple()


def cost_footer(usage: Usage, cost_micros: int | None, backend: Backend, lang: str) -> str:
    footer = t("cost_footer", lang, tokens=usage.total_tokens, cost=format_usd(cost_micros))
    if backend is Backend.LOCAL:
        footer += " | " + t("local_footer", lang)
    return footer


def error_text(kind: ErrorKind, lang: str, *, budget: str = "", reset: str = "") -> str:
    """The short, localised message a user sees for a failed model call."""
    return t(f"error.{kind.value}", lang, budget=budget, reset=reset)


def attachment_notes(results: Sequence[AttachmentResult], lang: str, limit_bytes: int) -> str:
    """One line per attachment that was not (fully) read, to append to the answer."""
    lines = [
        "⚠️ " + t(r.problem, lang, name=r.name, limit=f"{limit_bytes // (1024 * 1024)} MB")
        for r in results
        if r.problem
    ]
    return "\n".join(lines)


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
