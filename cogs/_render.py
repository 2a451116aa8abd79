"""Turn service outcomes into Discord objects: answer embeds, footers, member facts.

Shared by the cogs so every answer looks the same: title, markdown body split within
Discord's limits, and a localised footer with tokens and cost; mentions never ping.
Also how a deferred command is answered (`Deferred`: live, or after a restart from its
stored token), how it tells only its user that something went wrong, and the one check
that refuses new commands while the bot stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import nextcord
from nextcord.types.message import MessageReference as MessageReferencePayload

from ibot.db.pending_interactions import PendingInteraction, PendingRequest
from ibot.domain import Backend, ErrorKind, Feature, Usage
from ibot.i18n import t
from ibot.inflight import InFlight
from ibot.money import format_usd
from ibot.services.attachments import AttachmentResult, AttachmentSource
from ibot.services.duplicates import AlreadySolved
from ibot.services.formatting import embed_messages
from ibot.services.knowledge import Hit
from ibot.services.outcomes import Answered, Failed
from ibot.services.permissions import MemberFacts
from ibot.services.summary import SummaryFailed

if TYPE_CHECKING:
    from nextcord.state import ConnectionState

NO_MENTIONS = nextcord.AllowedMentions.none()
EMBED_COLOUR = nextcord.Colour.blurple()
# The deferred response's message id in webhook routes (`/messages/@original`); nextcord
# types the id as an int and formats whatever it gets into the route.
ORIGINAL = cast(int, "@original")


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


def held_command(
    interaction: nextcord.Interaction, feature: Feature, request: PendingRequest
) -> PendingInteraction:
    """A deferred command as the database holds it until it is answered, and answers
    it again after a crash (ibot/services/resume.py): the same fields for every command."""
    return PendingInteraction(
        interaction_id=interaction.id,
        application_id=interaction.application_id,
        token=interaction.token,
        feature=feature,
        user_id=invoker(interaction).id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        request=request,
    )


def attachment_source(attachment: nextcord.Attachment) -> AttachmentSource:
    return AttachmentSource(
        filename=attachment.filename,
        size=attachment.size,
        content_type=attachment.content_type,
        read=attachment.read,
    )


class Deferred:
    """A deferred command's response, reached through the webhook its token opens: the
    live interaction's (`live`), or, after a restart, one rebuilt from the stored token
    (`rebuilt`). The cogs deliver through it, so an answer looks the same either way.

    Live, the first follow-up fills the "thinking…" placeholder. Rebuilt, the placeholder
    is edited (`PATCH …/messages/@original`) with `note` above the answer, as nothing
    says which follow-up Discord would still take as the filling one.
    """

    def __init__(self, webhook: nextcord.Webhook, *, private: bool, note: str | None = None):
        self.webhook = webhook
        self.private = private
        self.note = note

    @classmethod
    def live(cls, interaction: nextcord.Interaction, *, private: bool) -> Deferred:
        return cls(interaction.followup, private=private)

    @classmethod
    def rebuilt(
        cls,
        state: ConnectionState,
        *,
        application_id: int,
        token: str,
        private: bool,
        note: str,
    ) -> Deferred:
        """What `Interaction.followup` builds, from the stored application id and token."""
        payload = {"id": application_id, "type": 3, "token": token}
        return cls(
            nextcord.Webhook.from_state(data=payload, state=state), private=private, note=note
        )

    async def send_answer(
        self, messages: Sequence[list[nextcord.Embed]], *, buttons: nextcord.ui.View | None = None
    ) -> int | None:
        """Post an answer's messages of embeds; `buttons` go under the first (public
        answers only). Returns the first message's id when it carries the buttons."""
        first_id: int | None = None
        for index, embeds in enumerate(messages):
            extra: dict[str, Any] = {} if buttons is None or index else {"view": buttons}
            if index == 0 and self.note is not None:
                message = await self.webhook.edit_message(
                    ORIGINAL,
                    content=self.note,
                    embeds=embeds,
                    allowed_mentions=NO_MENTIONS,
                    **extra,
                )
                first_id = message.id if extra else None
            elif extra:
                message = await self.webhook.send(
                    embeds=embeds, allowed_mentions=NO_MENTIONS, wait=True, **extra
                )
                first_id = message.id
            else:
                await self.webhook.send(
                    embeds=embeds, ephemeral=self.private, allowed_mentions=NO_MENTIONS
                )
        return first_id

    async def send_private(self, content: str) -> None:
        """Send `content` to the invoking user only.

        The first follow-up after a deferral does not create a message: it edits the
        loading one, and "The ephemeral flag will be ignored, and the value you provided
        in the initial defer response will be preserved" (Discord docs,
        receiving-and-responding, "Create Followup Message"). So after a public deferral
        the public "thinking…" message is deleted first; the follow-up is then a new
        message, and its ephemeral flag counts. After a private deferral, filling (or
        editing) the placeholder is already private.
        """
        if self.private and self.note is not None:
            await self.webhook.edit_message(ORIGINAL, content=content, allowed_mentions=NO_MENTIONS)
            return
        if not self.private:
            with contextlib.suppress(nextcord.NotFound):  # already gone: nothing to hide
                await self.webhook.delete_message(ORIGINAL)
        await self.webhook.send(content, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def refused_while_restarting(
    interaction: nextcord.Interaction, in_flight: InFlight, lang: str
) -> bool:
    """While the bot stops, a new command could be cut off: its user is told, privately,
    to ask again in a minute, and True is returned (the command does nothing else)."""
    if not in_flight.draining:
        return False
    await interaction.response.send_message(t("error.restarting", lang), ephemeral=True)
    return True
