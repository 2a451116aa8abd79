"""Answer a new forum post once: the logic behind the forum auto-reply cog.

Discord-free. The cog gives a `ForumPost` (title, starter text, author, tags,
attachments); this service decides whether the bot should answer at all, claims the
thread so that it is answered exactly once, builds the prompt (date, persona, author,
title, tags, text, attachments) and calls the gateway.

The prompt never exceeds the feature's `max_prompt_tokens` (as `ibot.tokens.count_messages`
counts it, like the gateway's estimate). When everything does not fit, the attached text
files get their share first, cut fairly (see `share_budget`) and each keeping its
`--- name ---` header, and the post's own text gets what is left, but never less than
`MIN_CONTENT_TOKENS` (1 000 tokens, or the whole text when shorter): the member's
question is not thrown away for their logs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
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
from ibot.services.attachments import (
    AttachmentKind,
    AttachmentLimits,
    AttachmentResult,
    AttachmentSource,
    process_attachments,
)

# The post's own text (the member's question) is never cut below this many tokens, or
# below its whole length when shorter: the attached files share the rest of the budget.
# 1 000 tokens is about 4 000 characters of English, more than almost any forum post, and
# leaves the files most of the default 12 000-token forum budget.
MIN_CONTENT_TOKENS = 1000


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


def share_budget(sizes: Sequence[int], budget: int) -> list[int]:
    """How many tokens each of the files of `sizes` tokens may keep, `budget` in all.

    A fair split: the budget is divided equally among the files, a file smaller than its
    equal part keeps everything and leaves the remainder to the larger ones, which share
    it equally. The shares never exceed the sizes, nor their sum the budget.
    """
    shares = [0] * len(sizes)
    left = max(0, budget)
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for done, index in enumerate(order):
        share = min(sizes[index], left // (len(order) - done))
        shares[index] = share
        left -= share
    return shares


def _with_bodies(
    processed: Sequence[AttachmentResult], shares: Sequence[int], model: str
) -> tuple[AttachmentResult, ...]:
    """`processed` with each text file's body cut to its share (in file order)."""
    shares_left = iter(shares)
    results = []
    for result in processed:
        if result.kind is AttachmentKind.TEXT and result.text is not None:
            body = tokens.truncate_text(result.text, next(shares_left), model)
            result = dataclasses.replace(result, text=body)
        results.append(result)
    return tuple(results)


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
        user_text, files = self._fit(post, processed, persona)
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

    def _fit(
        self, post: ForumPost, processed: Sequence[AttachmentResult], persona: str
    ) -> tuple[str, str]:
        """The user message's text and files block, cut to fit `max_prompt_tokens`.

        The files' budget is the limit less the fixed part (persona, template, title,
        tags, the files' headers and fences) and less the post text's floor
        (`MIN_CONTENT_TOKENS`, or the whole text if shorter); it is split among the files
        by `share_budget`. The post's text then gets all that is left. Token counts of
        joined pieces can differ by a token or so from the sum of their parts, so the
        result is re-counted and the files give back whatever the text's floor lacks.
        """
        model, limit = self.config.model, self.config.max_prompt_tokens

        def render(content: str) -> str:
            return self.prompts.render(
                "auto_reply",
                author=post.author_name,
                title=post.title,
                tags=", ".join(post.tags) or "-",
                content=content,
            )

        def count(content: str, files: str) -> int:
            messages = (
                ChatMessage("system", persona),
                ChatMessage("user", render(content) + files),
            )
            return tokens.count_messages(messages, model)

        def fit_content(files: str) -> str:
            room = limit - count("", files)
            content = tokens.truncate_text(post.content, room, model)
            while content and (over := count(content, files) - limit) > 0:
                room -= over
                content = tokens.truncate_text(post.content, room, model)
            return content

        texts = [r.text for r in processed if r.kind is AttachmentKind.TEXT and r.text is not None]
        sizes = [tokens.count_text(text, model) for text in texts]
        headers = attachments_block(_with_bodies(processed, [0] * len(texts), model))
        floor = min(tokens.count_text(post.content, model), MIN_CONTENT_TOKENS)
        budget = max(0, limit - count("", headers) - floor)
        while True:
            files = attachments_block(_with_bodies(processed, share_budget(sizes, budget), model))
            content = fit_content(files)
            lacking = floor - tokens.count_text(content, model)
            if lacking <= 0 or budget == 0:
                break
            budget = max(0, budget - lacking)
        if count(content, files) > limit:
            # Not even the files' headers fit beside the title and persona: drop them.
            files = ""
            content = fit_content(files)
        return render(content), files
