"""Answer a new forum post once: the logic behind the forum auto-reply cog.

Discord-free. The cog gives a `ForumPost` (title, starter text, author, tags,
attachments); this service decides whether the bot should answer at all, claims the
thread so that it is answered exactly once, builds the prompt (date, persona, author,
title, tags, text, attachments) and calls the gateway.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ibot import tokens
from ibot.db.threads import ThreadState, ThreadStore
from ibot.llm.gateway import Gateway
from ibot.llm.types import CallContext, ChatMessage, Feature, LLMRequest
from ibot.services.ask import (
    Answered,
    Failed,
    FeatureConfig,
    PromptBuilder,
    attachments_block,
    call_for_outcome,
)
from ibot.services.attachments import AttachmentLimits, AttachmentSource, process_attachments


@dataclass(frozen=True, slots=True)
class ForumPost:
    thread_id: int
    guild_id: int | None
    forum_id: int | None
    title: str
    content: str
    author_id: int
    author_name: str
    author_is_bot: bool = False
    tags: tuple[str, ...] = ()
    attachments: tuple[AttachmentSource, ...] = ()
    created_at: datetime | None = None


ForumOutcome = Answered | Failed


class ForumService:
    def __init__(
        self,
        gateway: Gateway,
        prompts: PromptBuilder,
        config: FeatureConfig,
        store: ThreadStore,
        *,
        no_bot_tags: Iterable[str] = (),
        attachment_limits: AttachmentLimits | None = None,
    ) -> None:
        self.gateway = gateway
        self.prompts = prompts
        self.config = config
        self.store = store
        self.no_bot_tags = {tag.casefold() for tag in no_bot_tags}
        self.attachment_limits = attachment_limits or AttachmentLimits()

    def skip_reason(self, *, author_is_bot: bool, tags: Iterable[str]) -> str | None:
        """Why the bot must stay out of this thread, or None to answer it."""
        if author_is_bot:
            return "bot_author"
        if any(tag.casefold() in self.no_bot_tags for tag in tags):
            return "no_bot_tag"
        return None

    async def claim(self, thread_id: int, *, guild_id: int | None, forum_id: int | None) -> bool:
        return await self.store.claim(thread_id, guild_id=guild_id, forum_id=forum_id)

    async def finish(self, thread_id: int, state: ThreadState, **kw: object) -> None:
        await self.store.finish(thread_id, state, **kw)  # type: ignore[arg-type]

    async def answer(self, post: ForumPost) -> ForumOutcome:
        processed = tuple(await process_attachments(post.attachments, self.attachment_limits))
        persona = self.prompts.persona
        fixed = self.prompts.render(
            "auto_reply",
            author=post.author_name,
            title=post.title,
            tags=", ".join(post.tags) or "-",
            content="",
        )
        files = attachments_block(processed)
        # The post's own text is what gets shortened when everything does not fit: the
        # title, the tags and the attachments' names stay.
        overhead = tokens.count_messages(
            (ChatMessage("system", persona), ChatMessage("user", fixed + files)),
            self.config.model,
        )
        room = max(0, self.config.max_prompt_tokens - overhead)
        content = tokens.truncate_text(post.content, room, self.config.model)
        user_text = self.prompts.render(
            "auto_reply",
            author=post.author_name,
            title=post.title,
            tags=", ".join(post.tags) or "-",
            content=content,
        )
        if tokens.count_text(files, self.config.model) > room:
            files = tokens.truncate_text(files, room, self.config.model)
        images = tuple(r.image for r in processed if r.image is not None)
        request = LLMRequest(
            messages=(
                ChatMessage("system", persona),
                ChatMessage("user", user_text + files, images=images),
            ),
            model=self.config.model,
            max_output_tokens=self.config.max_output_tokens,
            context=CallContext(
                feature=Feature.AUTO_REPLY,
                guild_id=post.guild_id,
                channel_id=post.forum_id,
                thread_id=post.thread_id,
                user_id=post.author_id,
            ),
            temperature=self.config.temperature,
        )
        return await call_for_outcome(self.gateway, request, processed)
